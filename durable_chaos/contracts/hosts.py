"""Docker hosts: what a worker says about itself when it starts serving one, and what the host's record keeps.

A host's record is a workflow that lives as long as the host is part of the fleet (`ChaosHostWorkflow`): its memo
holds the engine ID the host was first seen with, and what its latest worker serves. The memo is read with a
describe, which needs no worker, so a worker's start and the CLI's checks work while every worker is down.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

HOST_WORKFLOW_NAME = "ChaosHostWorkflow"


class Admission(BaseModel):
    """Which subjects a worker serves. Anyone who can start a workflow on the shared server reaches every host's
    worker, so a host's worker serves only what it was configured for."""

    unrestricted: bool = Field(default=False, description="every subject this worker can load, a folder anywhere "
                                                          "included (a worker started without --host)")
    subjects: list[str] = Field(default=[], description="subject names it serves")
    folders: list[str] = Field(default=[], description="subject folders it serves (absolute paths): its search "
                                                       "path's")


class WorkerSeen(BaseModel):
    """A worker that started serving a host."""

    identity: str
    host: str
    engine_id: str
    engine_version: str
    docker_host: str = Field(description="the engine's address as the worker reaches it (DOCKER_HOST)")
    started_at: datetime
    admission: Admission


class HostRecord(BaseModel):
    """The host's record, as first written (its memo carries the rest)."""

    host: str
    engine_id: str
    first_seen: datetime
