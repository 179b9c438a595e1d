"""The run options `chaos` and `schedule create` share: one definition, one help text. Their defaults are the run
input's (`ChaosInput`), which an experiment file's fields also take (durable_chaos/experiment/model.py): a default
is written once."""

from __future__ import annotations

import typer

from durable_chaos.experiment.model import default
from durable_chaos.faults import CATALOG, catalog_help

SUBJECT_OPTION = typer.Option(
    "etcd", help="Subject to break: a name (`python starter.py subjects` lists them) or a subject folder's path.")
HOST_OPTION = typer.Option(None, "--host", help="The Docker host the subject runs on: a worker started there with "
                           "`python worker.py --host NAME` runs every step that touches it (default: this machine, "
                           "whose worker this command starts if none runs). `python starter.py workers` lists "
                           "the hosts.")
PROJECT_OPTION = typer.Option(None, help="Compose project of the subject copy (default chaos-<subject>).")
PORT_BASE_OPTION = typer.Option(None, help="First host port of the subject copy (e.g. 23790).")
SLOW_FACTOR_OPTION = typer.Option(None, "--slow-factor", help="A member answering its checks this many times slower "
                                  "than its own baseline (measured in preflight) counts as slow, a violation: the "
                                  "subject's default (5) if unset.")
SLOW_CHECKS_OPTION = typer.Option(None, "--slow-checks", help="...for this many checks in a row (the subject's "
                                  "default, 3, if unset).")
DETECT_INTERVAL_OPTION = typer.Option(default("detect_interval_s"),
                                      help="Seconds between invariant checks while detecting.")
MAX_FAULT_SECONDS_OPTION = typer.Option(default("max_fault_s"),
                                        help="Restore starts at the latest this long after the fault.")
LOAD_RATE_OPTION = typer.Option(default("load_rate"), help="Operations a second the load sends, however slow the "
                                "answers (open loop); each is recorded and checked for lost data.")

# The fault: its kind, its parameters, whom it hits.
FAULT_OPTION = typer.Option(default("fault"), help=f"Fault kind: {', '.join(CATALOG)} (listed below).")
FAULT_KINDS_EPILOG = catalog_help()
PARAM_OPTION = typer.Option(None, "--param", "-p", metavar="KEY=VALUE",
                            help="A parameter of the fault kind (repeatable), e.g. -p percent=30, -p rate=512kbit, "
                                 "-p grace_s=5, -p groups='etcd1|etcd2,etcd3'.")
TARGET_OPTION = typer.Option(None, help="Member to hit: a service name, random (the default), leader or follower "
                                        "(the subject's primary role, read when the run starts).")
COUNT_OPTION = typer.Option(default("count"),
                            help="How many members to hit at once (the target first, the rest at random).")
QUORUM_OPTION = typer.Option(default("allow_quorum_loss"), "--allow-quorum-loss",
                             help="Allow --count to take more members than the subject's quorum rule can spare.")
NOTIFY_OPTION = typer.Option(None, "--notify", metavar="URL",
                             help="POST a JSON summary of the run here when it ends (Slack-compatible `text`). The "
                                  "URL is part of the run's input: for a webhook holding a token, set the worker's "
                                  "CHAOS_NOTIFY_URL instead.")

COUNTDOWN_OPTION = typer.Option(default("countdown_s"),
                                help="Seconds of countdown before the fault (a durable timer).")
DETECT_TIMEOUT_OPTION = typer.Option(
    default("detect_timeout_s"),
    help="Seconds to wait for detection before warning and going on (default: the subject's, 30 for etcd).")

# How a started run is shown: `chaos`, `run FILE` (and `abort`, for the report).
REPORT_JSON_OPTION = typer.Option(False, "--json", help="Print only the report as JSON on stdout.")
DETACH_OPTION = typer.Option(False, "--detach",
                             help="Start the run and return; follow it with `watch ID` or in the web UI.")

# Guardrails `chaos` and `schedule create` share: stop conditions (restore at once, verdict fail) and the user's own
# monitoring as extra detectors (timed beside ours).
MAX_ERROR_RATE_OPTION = typer.Option(
    None, "--max-error-rate", metavar="PCT",
    help="Stop (restore at once, fail) when more than PCT% of the load's operations fail over the last 5 s; "
         "0 stops at the first failed operation.")
MAX_P99_OPTION = typer.Option(None, "--max-p99-ms", metavar="MS",
                              help="Stop when a 1-s load window's p99 latency is above MS milliseconds.")
MAX_UNAVAILABLE_OPTION = typer.Option(None, "--max-unavailable-s", metavar="S",
                                      help="Stop when no load operation has succeeded for S seconds.")
ABORT_PROBE_OPTION = typer.Option(None, "--abort-probe", metavar="URL",
                                  help="Stop when this HTTP endpoint stops answering 2xx (asked every second).")
ABORT_QUERY_OPTION = typer.Option(None, "--abort-query", metavar="PROMQL",
                                  help="Stop when this Prometheus instant query returns anything but empty or zero "
                                       "(needs --prometheus).")
PROMETHEUS_OPTION = typer.Option(None, "--prometheus", metavar="URL",
                                 help="Prometheus base URL for --abort-query, e.g. http://127.0.0.1:9090.")
DETECT_ALERT_OPTION = typer.Option(
    None, "--detect-alert", metavar="NAME@URL",
    help="Your monitoring as a detector (repeatable): wait for alert NAME to fire in the Prometheus or Alertmanager "
         "at URL, and report its time to detect beside ours. The run fails if it never fires.")
DETECT_HTTP_OPTION = typer.Option(None, "--detect-http", metavar="URL",
                                  help="Your monitoring as a detector (repeatable): an endpoint that turns non-2xx "
                                       "when it notices the fault.")
