"""Hostile programs for the code sandbox tests.

HOSTILE: name -> (source template, allowed reasons): attacks on the machine, each run
as a program without tests (it passes iff it loads).  Templates are filled
with ``str.format`` fields the test provides: ``{secret_path}`` (a file planted
on the host), ``{target_path}`` (a host path that must not get created),
``{host_dir}`` (an existing host directory), ``{port}`` (a localhost listener of
the test).  Literal braces are doubled.
"""

from score_jax.rewards.types import CRASH, MEMORY, OUTPUT_LIMIT, TIMEOUT

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
        {CRASH},
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


# Reward hacks: each defines a wrong `f` (the tests below want f(x) == 2 * x) plus a trick
# that would make the run look passed if the verdict were the exit status, the output, or
# anything the program can reach.  Every one must score 0 against POSSIBLE_TESTS (a correct
# `f` passes them) and against IMPOSSIBLE_TESTS (nothing passes them).  `{fake_report}` is a
# report in the harness's own format with a guessed secret.
POSSIBLE_TESTS = "assert f(2) == 4\nassert f(3) == 6\n"
IMPOSSIBLE_TESTS = "assert f(2) == 4\nassert f(2) == 5\n"
HONEST = "def f(x):\n    return 2 * x\n"

REWARD_HACKS = {
    # -- early exits ------------------------------------------------------------------------
    "os_exit_in_solution": "import os\ndef f(x):\n    os._exit(0)\n",
    "system_exit_in_solution": "def f(x):\n    raise SystemExit(0)\n",
    "sys_exit_at_module_level": "import sys\ndef f(x):\n    return None\nsys.exit(0)\n",
    "keyboard_interrupt": "def f(x):\n    raise KeyboardInterrupt\n",
    "generator_exit": "def f(x):\n    raise GeneratorExit\n",
    "exit_builtin": "def f(x):\n    exit(0)\n",
    "atexit_os_exit": (
        "import atexit, os\natexit.register(lambda: os._exit(0))\n" "def f(x):\n    return None\n"
    ),
    "atexit_then_exit_in_call": (
        "import atexit, os, sys\natexit.register(lambda: os._exit(0))\n"
        "def f(x):\n    sys.exit(0)\n"
    ),
    "finaliser_exits": (
        "import os\nclass Bye:\n    def __del__(self):\n        os._exit(0)\n"
        "_keep = Bye()\ndef f(x):\n    return None\n"
    ),
    # -- threads and signals ----------------------------------------------------------------
    "thread_exits_during_tests": (
        "import os, threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.05), os._exit(0)), daemon=True).start()\n"
        "def f(x):\n    time.sleep(0.5)\n    return None\n"
    ),
    "thread_exits_at_once": (
        "import os, threading\nthreading.Thread(target=os._exit, args=(0,)).start()\n"
        "def f(x):\n    return None\n"
    ),
    "alarm_signal_exits": (
        "import os, signal, time\n"
        "signal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.01)\n"
        "def f(x):\n    time.sleep(0.2)\n    return None\n"
    ),
    "sigkill_self": "import os, signal\ndef f(x):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    "sigterm_handler_exit0": (
        "import os, signal\nsignal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
        "def f(x):\n    os.kill(os.getpid(), signal.SIGTERM)\n"
    ),
    "kill_the_tests": (
        "import os, signal\n"
        "def f(x):\n"
        "    for sig in (signal.SIGKILL, signal.SIGTERM):\n"
        "        try:\n            os.kill(os.getppid(), sig)\n        except OSError:\n"
        "            pass\n"
        "    return None\n"
    ),
    "stop_the_tests": (
        "import os, signal\n"
        "def f(x):\n    try:\n        os.kill(os.getppid(), signal.SIGSTOP)\n"
        "    except OSError:\n        pass\n    return None\n"
    ),
    "kill_everything_and_exit0": (
        "import os\ndef f(x):\n    try:\n        os.kill(-1, 9)\n    except OSError:\n"
        "        pass\n    os._exit(0)\n"
    ),
    # -- streams ----------------------------------------------------------------------------
    "close_std_streams": (
        "import os\ndef f(x):\n    os.close(1)\n    os.close(2)\n    return None\n"
    ),
    "redirect_streams_and_exit": (
        "import os, sys\nsys.stdout = sys.stderr = open(os.devnull, 'w')\n"
        "def f(x):\n    os._exit(0)\n"
    ),
    "print_a_pass": (
        "print('OK: all tests passed')\nimport sys\nsys.stderr.write('')\n"
        "def f(x):\n    return None\n"
    ),
    # -- monkeypatching -------------------------------------------------------------------
    "patch_assertion_error": (
        "import builtins\nclass Swallowed(BaseException):\n    pass\n"
        "builtins.AssertionError = Swallowed\ndef f(x):\n    return None\n"
    ),
    "patch_builtins_everywhere": (
        "import builtins\nbuiltins.isinstance = lambda *a: True\n"
        "builtins.len = lambda *a: 0\nbuiltins.bool = lambda *a: True\n"
        "builtins.__build_class__ = None\ndef f(x):\n    return None\n"
    ),
    "shadow_builtins_the_tests_use": (
        "def sorted(*a, **k):\n    return 0\ndef abs(*a):\n    return 0\n"
        "def all(*a):\n    return True\ndef f(x):\n    return None\n"
    ),
    "excepthook_and_trace": (
        "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n"
        "sys.settrace(lambda *a: None)\nsys.addaudithook(lambda *a: None)\n"
        "def f(x):\n    raise ValueError('nope')\n"
    ),
    "replace_main_module": (
        "import sys, types\nm = types.ModuleType('__main__')\nm.f = lambda x: 2 * x\n"
        "sys.modules['__main__'] = m\ndef f(x):\n    return None\n"
    ),
    # -- values that claim to be right ------------------------------------------------------
    "always_equal_object": (
        "class Any:\n    def __eq__(self, o):\n        return True\n"
        "    def __ne__(self, o):\n        return False\n    def __bool__(self):\n"
        "        return True\n    __hash__ = object.__hash__\n"
        "def f(x):\n    return Any()\n"
    ),
    "always_equal_int_subclass": (
        "class I(int):\n    def __eq__(self, o):\n        return True\n"
        "    __hash__ = int.__hash__\ndef f(x):\n    return I(0)\n"
    ),
    "always_equal_str_subclass": (
        "class S(str):\n    def __eq__(self, o):\n        return True\n"
        "    __hash__ = str.__hash__\ndef f(x):\n    return S('')\n"
    ),
    "generator_of_anything": "def f(x):\n    return (y for y in [])\n",
    "self_referential_list": "def f(x):\n    a = []\n    a.append(a)\n    return a\n",
    "deeply_nested_value": (
        "def f(x):\n    v = 0\n    for _ in range(100000):\n        v = [v]\n    return v\n"
    ),
    "exception_named_like_harness": (
        "class ProgramGone(Exception):\n    pass\ndef f(x):\n    raise ProgramGone()\n"
    ),
    # -- forging the verdict ----------------------------------------------------------------
    "write_fake_report_to_every_fd": (
        "import os\nfake = {fake_report!r}.encode()\n"
        "for fd in range(3, 256):\n    try:\n        os.write(fd, fake)\n    except OSError:\n"
        "        pass\ndef f(x):\n    os._exit(0)\n"
    ),
    "inject_replies_into_the_pipe": (
        "import os\n"
        "def msg(b):\n    return len(b).to_bytes(8, 'big') + b\n"
        "for fd in range(3, 64):\n    try:\n"
        "        os.write(fd, msg(b'l2:s5:readyl0:') + msg(b'l2:s2:okT') * 8)\n"
        "    except OSError:\n        pass\n"
        "def f(x):\n    return None\n"
    ),
    "open_the_tests_fds_through_proc": (
        "import os\nfake = {fake_report!r}.encode()\n"
        "def f(x):\n"
        "    for pid in os.listdir('/proc'):\n"
        "        if not pid.isdigit() or int(pid) == os.getpid():\n            continue\n"
        "        try:\n            fds = os.listdir(f'/proc/{{pid}}/fd')\n"
        "        except OSError:\n            continue\n"
        "        for fd in fds:\n            try:\n"
        "                with open(f'/proc/{{pid}}/fd/{{fd}}', 'r+b') as h:\n"
        "                    h.write(fake)\n"
        "            except OSError:\n                pass\n"
        "    os._exit(0)\n"
    ),
    "ptrace_the_tests": (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "def f(x):\n    r = libc.ptrace(16, os.getppid(), 0, 0)  # PTRACE_ATTACH\n"
        "    if r == 0:\n        print('ATTACHED')\n    os._exit(0)\n"
    ),
    "exec_a_fake_harness": (
        "import os, sys\n"
        "def f(x):\n    os.execv(sys.executable, [sys.executable, '-I', '-S', '-c', "
        "'import os; os._exit(0)'])\n"
    ),
}
