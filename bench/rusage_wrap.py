#!/usr/bin/env python3
"""Runs a command with the caller's stdin/stdout/environment and appends the CPU seconds
it and every process it waited for used (user + system, from wait4) to a log file.

    rusage_wrap.py LOG COMMAND [ARGS...]

Used as the CGI program in front of git http-backend to count the server CPU of a
request, which lives in short-lived processes no long-running PID accounts for.
"""
import os
import sys

log, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.execv(cmd[0], cmd)
_, status, ru = os.wait4(pid, 0)
with open(log, "a") as f:
    f.write(f"{ru.ru_utime + ru.ru_stime:.4f}\n")
sys.exit(os.waitstatus_to_exitcode(status))
