"""Hostile programs for the code sandbox tests.

Each entry: name -> (source template, allowed reasons).  Templates are filled
with ``str.format`` fields the test provides: ``{secret_path}`` (a file planted
on the host), ``{target_path}`` (a host path that must not get created),
``{host_dir}`` (an existing host directory), ``{port}`` (a localhost listener of
the test).  Literal braces are doubled.
"""

from score_jax.rewards.types import CRASH, MEMORY, OUTPUT_LIMIT, TIMEOUT, WRONG_ANSWER

HOSTILE = {
    "infinite_loop": (
        "while True:\n    pass\n",
        {TIMEOUT},
    ),
    "sleep_forever": (
        "import time\ntime.sleep(10_000)\n",
        {TIMEOUT},
    ),
    "memory_bomb_at_once": (
        "x = bytearray(64 << 30)\n",
        {MEMORY},
    ),
    "memory_bomb_growing": (
        "chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 23))\n",
        {MEMORY},
    ),
    "fork_bomb": (
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n",
        {TIMEOUT},
    ),
    "daemon_escape": (
        # Double fork + setsid: a daemon that would outlive the run, then fail.
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(10_000)\n"
        "    os._exit(0)\n"
        "assert False, 'tests failed'\n",
        {WRONG_ANSWER},
    ),
    "write_outside": (
        "open({target_path!r}, 'w').write('pwned')\n",
        {CRASH},
    ),
    "write_host_dir": (
        "import os\nos.listdir({host_dir!r})\nopen(os.path.join({host_dir!r}, 'pwned'), 'w')\n",
        {CRASH},
    ),
    "write_system_dir": (
        "open('/usr/pwned', 'w').write('pwned')\n",
        {CRASH},
    ),
    "read_secret": (
        "print(open({secret_path!r}).read())\n",
        {CRASH},
    ),
    "network_connect": (
        "import socket\n"
        "s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "s.sendall(b'pwned')\n",
        {CRASH},
    ),
    # Root-run bwrap: EPERM.  In a user namespace the kill is silently ignored
    # (the namespace's init ignores signals from inside), so exit non-zero.
    "kill_parent": (
        "import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(1)\nraise SystemExit('survived')\n",
        {CRASH},
    ),
    "kill_pid_1": (
        "import os, time\nos.kill(1, 9)\ntime.sleep(1)\nraise SystemExit('survived')\n",
        {CRASH},
    ),
    "kill_everything": (
        # kill(-1) hits every process we may signal (not ourselves).
        "import os\nos.kill(-1, 9)\nraise SystemExit('still here')\n",
        {CRASH},
    ),
    "become_root": (
        "import os\nos.setuid(0)\n",
        {CRASH},
    ),
    "huge_stdout": (
        "while True:\n    print('x' * 100_000)\n",
        {OUTPUT_LIMIT},
    ),
    "huge_stderr_swallowing_errors": (
        "import sys\n"
        "while True:\n"
        "    try:\n"
        "        sys.stderr.write('y' * 100_000)\n"
        "    except OSError:\n"
        "        pass\n",
        {OUTPUT_LIMIT},
    ),
    "fill_disk": (
        "i = 0\n"
        "while True:\n"
        "    with open(f'/tmp/f{{i}}', 'wb') as f:\n"
        "        f.write(b'z' * 30_000)\n"
        "    i += 1\n",
        {CRASH},
    ),
}
