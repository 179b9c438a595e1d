"""The activities the worker registers (`ALL`). `HOST_INDEPENDENT` touch no subject (Claude, webhooks, the
server's records): a host's worker serves them on the fleet's shared queue, and every other one only on its host's.
`HANDED_BACK` are the ones that only watch or read: a worker shutting down gracefully hands them back to run again
elsewhere (runtime/hand_back.py); the rest change a subject or write a record, and finish first.
"""

from activities.campaign import previous_campaign_report
from activities.diagnosis import diagnose, gather_evidence
from activities.faults import confirm_fault, inject_fault, restore_fault
from activities.guardrails import wait_external_detection, watch_stop_conditions
from activities.load import run_load_window
from activities.notify import post_notice
from activities.probes import choose_targets, detect_violation, preflight, wait_healthy
from activities.reaper import find_orphaned_faults, reap_fault, wait_until_run_closes
from activities.safety import check_safety

ALL = [preflight, run_load_window, inject_fault, detect_violation, gather_evidence, diagnose, restore_fault,
       wait_healthy, find_orphaned_faults, reap_fault, wait_until_run_closes, check_safety, watch_stop_conditions,
       wait_external_detection, post_notice, confirm_fault, choose_targets, previous_campaign_report]
HANDED_BACK = [detect_violation, gather_evidence, diagnose, wait_healthy, wait_until_run_closes, check_safety,
               watch_stop_conditions, wait_external_detection, confirm_fault, find_orphaned_faults, choose_targets,
               previous_campaign_report]
HOST_INDEPENDENT = [diagnose, post_notice, wait_until_run_closes, find_orphaned_faults, previous_campaign_report]
