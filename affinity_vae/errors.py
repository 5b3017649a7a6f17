"""The one exception type for mistakes a user can fix (bad config, bad file, unknown class)."""

# How affinity_vae.runner marks a job's one-line InputError in the rule's log file, and how
# affinity_vae.failures finds it there again for the end-of-run summary.
LOG_MARKER = "InputError: "
# How the runner marks an unexpected exception (a bug, not the user's input) in the log file.
CRASH_MARKER = "crashed: "
# Set by the Snakefile for its jobs: the workflow's `onerror:` handler prints each failed
# job's line once at the end of the run, so the job itself writes it only to its log file.
SUMMARY_ENV = "AVAE_ERROR_SUMMARY"


class InputError(ValueError):
    """A user-fixable problem. The message is one line naming the file or key and the fix."""
