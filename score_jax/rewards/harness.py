"""The in-sandbox test harness: the tests and the program run in two processes.

This file is not imported by the package: `code_sandbox` runs its source inside the sandbox
as ``python -I -S -c <this file> <limits> <job_fd> <report_fd>``.  It forks once, before it
has read anything secret:

* the **program process** (untrusted) closes every descriptor but its ends of two pipes,
  reads the program from stdin, drops to the program's uid (as root) and rlimits, runs the
  program as ``__main__`` and then serves requests on the pipes: call this object, get this
  attribute, list this iterable...  Every answer is plain data (``None``, bools, ints,
  floats, complex, str, bytes, lists, tuples, dicts, sets, ranges, deques) or a handle.
* the **test process** (trusted) makes itself non-dumpable, drops to a second uid (as root),
  then reads the job (a per-run secret and the test code) from a descriptor the program
  process never held, and runs the tests with the program's names bound to proxies of those
  handles.  It never runs a line of the program's code: it only decodes plain data into
  built-in types (JSON, then a closed list of tags) and sends requests.  After the last test
  it writes a report (the secret, passed / total test cases, the reason) to a second
  descriptor the program process never held.

`code_sandbox` gives reward 1 only for a report that carries the secret and says that every
test case passed.  What that guarantees, and what it does not:

* Ending the run early gives 0 whatever the exit status: ``sys.exit``/``SystemExit``,
  ``os._exit``, ``KeyboardInterrupt``, a signal, a thread, an atexit handler or a finaliser
  in the program can only stop or kill the program process (the tests then see it gone), or
  kill the test process (no report).  Nothing the program does to its own interpreter
  (monkeypatching builtins, ``assert``, ``sys.modules``, stdout/stderr, audit or trace
  hooks, ctypes writes to its own memory) reaches the tests: they live in another process.
* The report cannot be forged: the secret and the report descriptor exist only in the test
  process, which the program cannot ptrace or read through ``/proc`` (different uid as
  root; non-dumpable always), and the secret is never in argv, the environment or a file.
  A new trick therefore needs a new hole in the kernel's process isolation.
* A returned object that claims equality with anything gives nothing: only plain data
  crosses back as values, so ``==``, ``in``, ``bool`` and arithmetic in the tests are
  computed on built-in types by the test process.  Other objects stay in the program
  process as handles: the tests can call them, get and set their attributes, index, iterate
  (materialised there, decoded here), take ``len``/``str``/``repr``; ``==`` on a handle is
  identity and its truth value is an error.  Program names that shadow builtins are not
  bound in the tests (unless the job exposes one: the entry point, e.g. MBPP's ``sum``), a
  module the program imported, and any name of a standard-library module, are bound to the
  test process's own module, and the program's exceptions reach the tests by name, except
  ``StopIteration`` (it would end a ``map`` in the tests early) and exits/interrupts.
* Not covered: test code that trusts a helper of the program (HumanEval/32 checks
  ``poly(xs, x)`` with the program's ``poly``); tests that pass test-defined functions or
  objects other than plain data to the program (an error, so 0), or that expect the program
  to mutate an argument in place (the program gets a copy).  Knowing the expected outputs
  by heart still passes: the tests are not in the program process, but the task statement
  may show them.

Test cases (for the passed / total counts): every ``assert`` statement at the top level of
the test module or of a function defined at its top level (HumanEval's ``check``).  A
failed case is recorded and the tests go on; any other exception ends the tests.
"""

import builtins
import os
import resource
import sys

_MAX_MESSAGE = 64 << 20  # bytes of one encoded value
_MAX_DEPTH = 200  # nesting of one encoded value
_EXIT_SETUP = 121  # the sandbox could not be set up (code_sandbox.WRAPPER_ERROR)
_CASE = "__score_case__"
# Modules that must not be imported on the program's say-so (side effects at import).
_NO_IMPORT = frozenset(
    {
        "antigravity",
        "this",
        "__hello__",
        "__phello__",
        "idlelib",
        "turtle",
        "turtledemo",
        "tkinter",
        "webbrowser",
        "pydoc",
    }
)


class ProtocolError(Exception):
  """The program process sent something that is not a well-formed answer."""


class ProgramGone(BaseException):
  """The program process ended or broke the channel (not an `Exception`: a test case must
  not swallow it)."""


class ProgramError(Exception):
  """An exception the program raised, re-raised in the tests by name."""


# --- Encoding (both sides) ------------------------------------------------------------------
def _encode(x, handle, depth=0):
  """Plain data -> tagged JSON; anything else -> handle(x) (program side) or an error."""
  if depth > _MAX_DEPTH:
    raise ValueError("value nested too deeply")
  if x is None or x is True or x is False:
    return x
  d = depth + 1
  if isinstance(x, str):
    return str.__str__(x)
  if isinstance(x, int):  # hex: no 4300-digit limit on the conversion
    return ["i", format(int.__index__(x), "x")]
  if isinstance(x, float):
    return ["f", float.__repr__(x)]
  if isinstance(x, complex):
    return ["c", float.__repr__(x.real), float.__repr__(x.imag)]
  if isinstance(x, bytes):
    return ["b", bytes.hex(x)]
  if isinstance(x, bytearray):
    return ["ba", bytearray.hex(x)]
  if type(x).__name__ == "deque" and type(x).__module__ == "collections":
    return ["q", [_encode(e, handle, d) for e in list(x)], x.maxlen]
  if isinstance(x, list):
    return ["l", [_encode(e, handle, d) for e in list.copy(x)]]
  if isinstance(x, tuple):
    return ["t", [_encode(e, handle, d) for e in tuple.__iter__(x)]]
  if isinstance(x, frozenset):
    return ["fs", [_encode(e, handle, d) for e in frozenset.__iter__(x)]]
  if isinstance(x, set):
    return ["s", [_encode(e, handle, d) for e in set.__iter__(x)]]
  if isinstance(x, dict):
    return ["d", [[_encode(k, handle, d), _encode(v, handle, d)] for k, v in dict.items(x)]]
  if isinstance(x, range):
    return ["r", x.start, x.stop, x.step]
  if isinstance(x, type) and getattr(builtins, x.__name__, None) is x:
    return ["T", x.__name__]  # int, str, ... (e.g. a type the tests pass as an argument)
  return handle(x)


def _decode(v, remote, depth=0):
  """Tagged JSON -> built-in values (test side: this is all the program can send)."""
  if depth > _MAX_DEPTH:
    raise ProtocolError("value nested too deeply")
  if v is None or v is True or v is False or type(v) is str:
    return v
  if type(v) is not list or not v or type(v[0]) is not str:
    raise ProtocolError(f"not an encoded value: {type(v).__name__}")
  tag, d = v[0], depth + 1

  def items():
    if len(v) < 2 or type(v[1]) is not list:
      raise ProtocolError(f"bad {tag!r} value")
    return [_decode(e, remote, d) for e in v[1]]

  def text(i):
    if len(v) <= i or type(v[i]) is not str:
      raise ProtocolError(f"bad {tag!r} value")
    return v[i]

  try:
    if tag == "i":
      return int(text(1), 16)
    if tag == "f":
      return float(text(1))
    if tag == "c":
      return complex(float(text(1)), float(text(2)))
    if tag == "b":
      return bytes.fromhex(text(1))
    if tag == "ba":
      return bytearray.fromhex(text(1))
    if tag == "l":
      return items()
    if tag == "t":
      return tuple(items())
    if tag == "s":
      return set(items())
    if tag == "fs":
      return frozenset(items())
    if tag == "d":
      if (
          len(v) < 2
          or type(v[1]) is not list
          or not all(type(p) is list and len(p) == 2 for p in v[1])
      ):
        raise ProtocolError("bad dict value")
      return {_decode(k, remote, d): _decode(val, remote, d) for k, val in v[1]}
    if tag == "T":
      cls = getattr(builtins, text(1), None)
      if not isinstance(cls, type):
        raise ProtocolError("bad type value")
      return cls
    if tag == "q":
      maxlen = v[2] if len(v) > 2 else None
      if maxlen is not None and type(maxlen) is not int:
        raise ProtocolError("bad deque value")
      import collections

      return collections.deque(items(), maxlen)
    if tag == "r":
      if len(v) != 4 or not all(type(a) is int for a in v[1:]):
        raise ProtocolError("bad range value")
      return range(v[1], v[2], v[3])
    if tag == "h":
      if len(v) != 3 or type(v[1]) is not int:
        raise ProtocolError("bad handle")
      return remote(v[1], text(2))
  except (TypeError, ValueError, OverflowError) as e:  # e.g. an unhashable set element
    raise ProtocolError(f"bad {tag!r} value: {e}") from None
  raise ProtocolError(f"unknown tag {tag!r}")


# --- The channel ----------------------------------------------------------------------------
# Messages are trees of None, bools, ints, strs and lists (the tagged values above, requests,
# replies), written in a netstring-like format: N T F | i<digits>; | s<n>:<utf-8> |
# l<n>:<items>.  Not JSON: importing `json` costs ~10 ms a run (re, enum, ...), and a parser
# this small is easy to check: it builds nothing but those five types.
def _dumps(tree):
  out = []

  def put(x):
    if x is None:
      out.append(b"N")
    elif x is True:
      out.append(b"T")
    elif x is False:
      out.append(b"F")
    elif type(x) is int:
      out.append(b"i%d;" % x)
    elif type(x) is str:
      data = x.encode("utf-8", "surrogatepass")
      out.append(b"s%d:" % len(data))
      out.append(data)
    elif type(x) is list or type(x) is tuple:
      out.append(b"l%d:" % len(x))
      for e in x:
        put(e)
    elif type(x) is dict:  # only for fixed messages: [[key, value], ...]
      put([[k, v] for k, v in x.items()])
    else:
      raise TypeError(f"cannot send a {type(x).__name__}")

  put(tree)
  return b"".join(out)


def _loads(data):
  """bytes -> tree; raises ProtocolError on anything malformed (never builds other types)."""
  n = len(data)

  def count(pos, end):
    j = data.find(end, pos, pos + 24)
    if j < 0:
      raise ProtocolError("bad length")
    return int(data[pos:j]), j + 1

  def get(pos, depth):
    if depth > _MAX_DEPTH + 8 or pos >= n:
      raise ProtocolError("truncated or too deep")
    c = data[pos]
    if c == 78:  # N
      return None, pos + 1
    if c == 84:  # T
      return True, pos + 1
    if c == 70:  # F
      return False, pos + 1
    if c == 105:  # i
      j = data.find(b";", pos + 1)
      if j < 0:
        raise ProtocolError("bad int")
      return int(data[pos + 1 : j]), j + 1
    if c == 115:  # s
      k, pos = count(pos + 1, b":")
      if k < 0 or pos + k > n:
        raise ProtocolError("bad str")
      return data[pos : pos + k].decode("utf-8", "surrogatepass"), pos + k
    if c == 108:  # l
      k, pos = count(pos + 1, b":")
      if k < 0 or k > n:
        raise ProtocolError("bad list")
      items = []
      for _ in range(k):
        x, pos = get(pos, depth + 1)
        items.append(x)
      return items, pos
    raise ProtocolError(f"bad byte {c}")

  try:
    tree, end = get(0, 0)
  except (ValueError, UnicodeDecodeError, RecursionError) as e:
    raise ProtocolError(str(e)) from None
  if end != n:
    raise ProtocolError("trailing bytes")
  return tree


class _Pipe:
  """Length-prefixed messages over two pipes (cheaper to set up than a socket)."""

  def __init__(self, rfd, wfd):
    self.rfd, self.wfd = rfd, wfd

  def send(self, obj):
    data = _dumps(obj)
    data = len(data).to_bytes(8, "big") + data
    view = memoryview(data)
    while view:
      view = view[os.write(self.wfd, view) :]

  def _exact(self, n):
    buf = bytearray()
    while len(buf) < n:
      chunk = os.read(self.rfd, min(n - len(buf), 1 << 20))
      if not chunk:
        raise EOFError
      buf += chunk
    return bytes(buf)

  def recv(self):
    n = int.from_bytes(self._exact(8), "big")
    if n > _MAX_MESSAGE:
      raise ValueError(f"message of {n} bytes")
    return _loads(self._exact(n))


# --- The program process --------------------------------------------------------------------
def _serve(src, pipe):
  """Run the program, then answer requests until the test process hangs up."""
  module_type = type(sys)
  objects = {}  # handle id -> object (kept alive)

  def handle(x):
    objects[id(x)] = x
    return ["h", id(x), type(x).__name__]

  def enc(x):
    if isinstance(x, module_type):
      objects[id(x)] = x
      return ["m", id(x), x.__name__]
    return _encode(x, handle)

  def dec(v):
    return _decode(v, lambda hid, _: objects[hid])

  main = module_type("__main__")
  main.__file__ = "program.py"
  sys.modules["__main__"] = main
  sys.argv = ["program.py"]
  try:
    exec(compile(src, "program.py", "exec"), main.__dict__)
    names = []
    for k, val in list(main.__dict__.items()):
      if not k.startswith("__"):
        try:
          names.append([k, enc(val)])
        except Exception:
          names.append([k, handle(val)])
    reply = ["ready", names]
  except BaseException as e:  # SystemExit too: leaving during the load is a failure
    import traceback

    traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # from the program's frame
    reply = ["load_error", type(e).__name__, str(e)[:2000]]
  sys.stdout.flush()
  sys.stderr.flush()
  pipe.send(reply)
  if reply[0] != "ready":
    os._exit(1)
  while True:
    try:
      req = pipe.recv()
    except (EOFError, OSError, ValueError, ProtocolError):
      os._exit(0)
    try:
      op, h = req[0], objects[req[1]]
      if op == "call":
        out = h(*[dec(a) for a in req[2]], **{k: dec(a) for k, a in req[3]})
      elif op == "getattr":
        out = getattr(h, req[2])
      elif op == "setattr":
        out = setattr(h, req[2], dec(req[3]))
      elif op == "delattr":
        out = delattr(h, req[2])
      elif op == "getitem":
        out = h[dec(req[2])]
      elif op == "setitem":
        h[dec(req[2])] = dec(req[3])
        out = None
      elif op == "len":
        out = len(h)
      elif op == "list":
        out = list(h)
      elif op == "str":
        out = str(h)
      elif op == "repr":
        out = repr(h)
      else:
        raise ValueError(f"unknown request {op!r}")
      reply = ["ok", enc(out)]
    except BaseException as e:
      reply = ["exc", type(e).__name__, str(e)[:2000]]
    sys.stdout.flush()
    sys.stderr.flush()
    pipe.send(reply)


# --- The test process -----------------------------------------------------------------------
class _Channel:
  """The test side of the pipes: requests out, decoded plain values (or proxies) in."""

  def __init__(self, pipe):
    self.pipe = pipe
    self.proxies = {}

  def remote(self, hid, type_name):
    p = self.proxies.get(hid)
    if p is None:
      p = self.proxies[hid] = Remote(self, hid, type_name)
    return p

  def arg(self, x):
    def handle(o):
      if type(o) is Remote and object.__getattribute__(o, "_channel") is self:
        return ["h", object.__getattribute__(o, "_id"), ""]
      raise TypeError(f"the tests cannot pass a {type(o).__name__} to the program")

    return _encode(x, handle)

  def request(self, *req):
    try:
      self.pipe.send(list(req))
      reply = self.pipe.recv()
    except (EOFError, OSError, ValueError, ProtocolError) as e:
      raise ProgramGone(f"the program process is gone ({type(e).__name__})") from None
    if type(reply) is not list or not reply:
      raise ProgramGone("malformed reply")
    if reply[0] == "ok" and len(reply) == 2:
      try:
        return _decode(reply[1], self.remote)
      except (ProtocolError, RecursionError, MemoryError) as e:
        raise ProgramGone(f"malformed reply: {e}") from None
    if reply[0] == "exc" and len(reply) == 3 and all(type(x) is str for x in reply[1:]):
      raise _program_exception(reply[1], reply[2])
    raise ProgramGone("malformed reply")


def _program_exception(name, message):
  """The program's exception as the built-in class of that name (so `except ValueError`
  in a test works), else `ProgramError`; never an exit or interrupt."""
  cls = getattr(builtins, name, None)
  # Never StopIteration: raised from a call inside map()/zip() it would end the tests'
  # iteration early (all(map(f, xs)) would be True).
  if (
      isinstance(cls, type)
      and issubclass(cls, Exception)
      and not issubclass(cls, (StopIteration, StopAsyncIteration))
  ):
    try:
      return cls(message)
    except Exception:
      pass
  return ProgramError(f"{name}: {message}")


class Remote:
  """An object that lives in the program process."""

  __slots__ = ("_channel", "_id", "_type")

  def __init__(self, channel, hid, type_name):
    object.__setattr__(self, "_channel", channel)
    object.__setattr__(self, "_id", hid)
    object.__setattr__(self, "_type", type_name)

  def _req(self, op, *args):
    return object.__getattribute__(self, "_channel").request(
        op, object.__getattribute__(self, "_id"), *args
    )

  def _arg(self, x):
    return object.__getattribute__(self, "_channel").arg(x)

  def __call__(self, *args, **kwargs):
    return self._req(
        "call", [self._arg(a) for a in args], {str(k): self._arg(v) for k, v in kwargs.items()}
    )

  def __getattr__(self, name):
    if name.startswith("__") and name.endswith("__"):
      raise AttributeError(name)  # protocol probes (copy, pickle, ...) stay local
    return self._req("getattr", name)

  def __setattr__(self, name, value):
    self._req("setattr", name, self._arg(value))

  def __delattr__(self, name):
    self._req("delattr", name)

  def __getitem__(self, key):
    return self._req("getitem", self._arg(key))

  def __setitem__(self, key, value):
    self._req("setitem", self._arg(key), self._arg(value))

  def __len__(self):
    n = self._req("len")
    if type(n) is not int or n < 0:
      raise TypeError("len() of a program object is not a non-negative int")
    return n

  def __iter__(self):
    items = self._req("list")
    if type(items) is not list:
      raise TypeError("iterating a program object gave no list")
    return iter(items)

  def __contains__(self, x):
    return any(x is e or x == e for e in self)

  def __str__(self):
    s = self._req("str")
    if type(s) is not str:
      raise TypeError("str() of a program object is not a str")
    return s

  def __repr__(self):
    s = self._req("repr")
    if type(s) is not str:
      raise TypeError("repr() of a program object is not a str")
    return s

  def __bool__(self):
    raise TypeError(
        f"the truth value of a {object.__getattribute__(self, '_type')} "
        "object from the program is not decided by the tests"
    )

  __hash__ = object.__hash__

  def __eq__(self, other):
    return self is other

  def __ne__(self, other):
    return self is not other


class _Cases:
  """Records the outcome of every test case."""

  def __init__(self, total):
    self.total = total
    self.ok = {}  # case index -> all runs passed
    self.first_failure = None  # (reason, detail)

  def __call__(self, i, value=None, error=None):
    passed = False
    if error is None:
      try:
        passed = bool(value)
      except Exception as e:
        error = e
    if not passed:
      self.fail_reason(
          _reason_of(error) if error is not None else "wrong_answer",
          f"test case {i} failed"
          + (f": {type(error).__name__}: {error}" if error is not None else ""),
      )
    self.ok[i] = self.ok.get(i, True) and passed

  def fail_reason(self, reason, detail):
    if self.first_failure is None:
      self.first_failure = (reason, detail[:500])

  @property
  def passed(self):
    return sum(self.ok.values())


def _reason_of(error):
  if isinstance(error, MemoryError) or "MemoryError" in str(error)[:20]:
    return "memory"
  if isinstance(error, AssertionError):
    return "wrong_answer"
  return "crash"


def mark_cases(test_src, expose=()):
  """-> the job text for `main`: a header (cases, exposed names), then the tests with every
  test case rewritten to report to `_CASE`.

  Runs in the parent (it needs `ast`, which the harness does not import: ~8 ms a start).
  A case is an ``assert T, M`` at the top level of the module or of one of its top-level
  functions; it becomes ``try: v = T / except Exception as e: case(i, error=e) /
  else: case(i, value=v)``.  Raises SyntaxError when the tests do not parse.
  """
  import ast

  count = 0

  def case(i, kw, name):
    return ast.Expr(
        ast.Call(
            ast.Name(_CASE, ast.Load()),
            [ast.Constant(i)],
            [ast.keyword(kw, ast.Name(name, ast.Load()))],
        )
    )

  def mark(body, top):
    nonlocal count
    out = []
    for node in body:
      if isinstance(node, ast.Assert):
        i, count = count, count + 1
        node = ast.Try(
            body=[ast.Assign([ast.Name("__score_value__", ast.Store())], node.test)],
            handlers=[
                ast.ExceptHandler(
                    ast.Name("Exception", ast.Load()),
                    "__score_error__",
                    [case(i, "error", "__score_error__")],
                )
            ],
            orelse=[case(i, "value", "__score_value__")],
            finalbody=[],
        )
      elif top and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        node.body = mark(node.body, False)
      out.append(node)
    return out

  tree = ast.parse(test_src, "tests.py")
  tree.body = mark(tree.body, True)
  source = ast.unparse(ast.fix_missing_locations(tree))
  return f"{count} {' '.join(sorted(expose))}\n{source}"


def _program_names(channel, names, expose):
  """The program's globals as the tests see them: no dunder names, and no name that shadows
  a builtin unless the job exposes it (an entry point such as MBPP's `sum`)."""
  ns = {}
  for pair in names:
    if type(pair) is not list or len(pair) != 2:
      raise ProtocolError("bad name")
    k, v = pair
    if (
        not isinstance(k, str)
        or k.startswith("__")
        or k == _CASE
        or (hasattr(builtins, k) and k not in expose)
    ):
      continue
    if k in sys.stdlib_module_names and k not in _NO_IMPORT and k not in expose:
      v = ["m", 0, k]  # `math` is the real math, whatever the program bound to the name
    if type(v) is list and len(v) == 3 and v[0] == "m" and type(v[2]) is str:
      top = v[2].split(".")[0]
      if top in sys.stdlib_module_names and top not in _NO_IMPORT:
        try:
          __import__(v[2])
          ns[k] = sys.modules[v[2]]
          continue
        except Exception:
          pass
      v = ["h", v[1], "module"]
    ns[k] = _decode(v, channel.remote)
  return ns


def _worker_end(pid):
  """Why the program process ended (it is gone or will be killed now)."""
  import signal
  import time

  try:
    for _ in range(100):  # it closed the channel: give it a moment to be gone
      done, status = os.waitpid(pid, os.WNOHANG)
      if done:
        break
      time.sleep(0.01)
    else:  # still there (another uid: not ours to kill; it dies with the sandbox)
      return "crash", "the program process broke the channel"
  except ChildProcessError:
    return "crash", "the program process is gone"
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    if sig == signal.SIGXCPU:
      return "timeout", "the program ran out of CPU time"
    if sig == signal.SIGXFSZ:
      return "output_limit", "the program hit the output limit"
    return "crash", f"the program process died of signal {sig}"
  return "crash", f"the program process exited with status {os.WEXITSTATUS(status)}"


def _load_reason(name):
  if name in ("SyntaxError", "IndentationError", "TabError"):
    return "syntax_error"
  if name == "MemoryError":
    return "memory"
  return "crash"


def _run_tests(job, pipe, pid):
  """The job (header line, marked tests) against the program -> the report (no secret)."""
  header, _, test_src = job.partition("\n")
  total, *expose = header.split(" ")
  cases = _Cases(int(total))
  try:
    code = compile(test_src, "tests.py", "exec")
  except (SyntaxError, ValueError) as e:
    return dict(
        reason="sandbox_error", passed=0, total=cases.total, detail=f"the tests do not compile: {e}"
    )
  channel = _Channel(pipe)
  try:
    try:
      first = pipe.recv()
    except (EOFError, OSError, ValueError, ProtocolError):
      raise ProgramGone("no answer from the program process") from None
    if type(first) is list and first[:1] == ["load_error"] and len(first) == 3:
      cases.fail_reason(_load_reason(first[1]), f"the program raised {first[1]}: {first[2]}")
    elif type(first) is list and len(first) == 2 and first[0] == "ready" and type(first[1]) is list:
      ns = {"__name__": "__main__", "__builtins__": builtins}
      ns.update(_program_names(channel, first[1], set(expose)))
      ns[_CASE] = cases
      exec(code, ns)
    else:
      raise ProgramGone("malformed first message")
  except ProgramGone:
    cases.fail_reason(*_worker_end(pid))
  except AssertionError as e:
    cases.fail_reason("wrong_answer", f"AssertionError: {e}")
  except BaseException as e:  # the tests ended by an error (the program's or their own)
    cases.fail_reason(_reason_of(e), f"{type(e).__name__}: {e}")
  if cases.first_failure is None and cases.passed == cases.total:
    return dict(reason="correct", passed=cases.passed, total=cases.total, detail="")
  reason, detail = cases.first_failure or ("wrong_answer", "not every test case ran")
  return dict(reason=reason, passed=cases.passed, total=cases.total, detail=detail)


# --- Setup ----------------------------------------------------------------------------------
def _limit(cpu, mem, fsize, nproc, nofile):
  R = resource
  for lim, val in (
      (R.RLIMIT_CORE, 0),
      (R.RLIMIT_FSIZE, fsize),
      (R.RLIMIT_NOFILE, nofile),
      (R.RLIMIT_NPROC, nproc),
      (R.RLIMIT_AS, mem),
  ):
    R.setrlimit(lim, (val, val))
  R.setrlimit(R.RLIMIT_CPU, (cpu, cpu + 1))


def _become(uid):
  if uid >= 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _nondumpable():
  """No ptrace and no /proc/<pid>/{mem,fd,environ} for processes without CAP_SYS_PTRACE."""
  import ctypes

  libc = ctypes.CDLL(None, use_errno=True)
  if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0)")


def _read_fd(fd):
  chunks = []
  while True:
    b = os.read(fd, 1 << 20)
    if not b:
      return b"".join(chunks)
    chunks.append(b)


def _block_network():
  import _socket
  import socket

  def refuse(*a, **k):
    raise PermissionError(1, "network access is disabled in the sandbox")

  class NoSocket(socket.socket):

    def __init__(self, *a, **k):
      refuse()

  socket.socket = _socket.socket = NoSocket
  socket.socketpair = socket.create_connection = socket.fromfd = refuse


def main(argv):
  """argv: cpu mem fsize nproc nofile uid_tests uid_program block_net job_fd report_fd."""
  cpu, mem, fsize, nproc, nofile, uid_tests, uid_program, block_net, job_fd, report_fd = (
      int(a) for a in argv[1:11]
  )
  try:
    if uid_tests < 0:  # one uid for both: only non-dumpability keeps ptrace off the tests
      _nondumpable()
    to_program, from_tests = os.pipe()
    to_tests, from_program = os.pipe()
    pid = os.fork()
  except BaseException as e:
    sys.stderr.write(f"sandbox-wrapper: {e!r}\n")
    os._exit(_EXIT_SETUP)
  if pid == 0:  # the program process
    try:
      lo, hi = sorted((to_program, from_program))
      os.closerange(3, lo)  # everything but the two pipe ends: the job, the report, ...
      os.closerange(lo + 1, hi)
      os.closerange(hi + 1, 1 << 16)
      src = _read_fd(0).decode("utf-8", "surrogateescape")
      null = os.open("/dev/null", os.O_RDONLY)
      os.dup2(null, 0)
      os.close(null)
      _limit(cpu, mem, fsize, nproc, nofile)
      _become(uid_program)
      if block_net:
        _block_network()
    except BaseException as e:
      sys.stderr.write(f"sandbox-wrapper: {e!r}\n")
      sys.stderr.flush()
      os._exit(_EXIT_SETUP)
    _serve(src, _Pipe(to_program, from_program))
    os._exit(0)
  # The test process.
  try:
    os.close(to_program)
    os.close(from_program)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _limit(cpu, mem, fsize, max(nproc, 8), nofile)
    _become(uid_tests)  # as root: a uid change also makes the process non-dumpable
    job = _read_fd(job_fd).decode("utf-8", "surrogateescape")
    os.close(job_fd)
    secret, _, job = job.partition("\n")
  except BaseException as e:
    sys.stderr.write(f"sandbox-wrapper: {e!r}\n")
    os._exit(_EXIT_SETUP)
  try:
    report = _run_tests(job, _Pipe(to_tests, from_tests), pid)
  except BaseException as e:  # never expected; still a report, never a pass
    report = dict(reason="sandbox_error", passed=0, total=0, detail=f"harness: {e!r}")
  report["secret"] = secret
  os.write(report_fd, _dumps(report))
  os.close(report_fd)
  os.close(from_tests)  # the program process exits at EOF; the sandbox ends the rest
  os._exit(0)


if __name__ == "__main__":
  main(sys.argv)
