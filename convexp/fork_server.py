"""Imported first by the fork server that a study's workers start from (executor.worker_context).

systemd, `timeout` and Slurm's scancel send SIGTERM to every process of the job, the fork server
included. The server must outlive it: the study learns how each worker ended through it (a dead
server reports every worker as exited, so the study would neither wait for its workers nor
stop them). It ignores SIGTERM, as multiprocessing already has it ignore SIGINT, and still exits
when the study's process does. Each worker puts SIGTERM back to its default first thing.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
