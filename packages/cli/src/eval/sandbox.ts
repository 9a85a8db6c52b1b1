/**
 * A sandbox for generated Python code (LiveCodeBench): each test runs the program in a fresh
 * `python3` process, and the host is protected by what the machine allows.
 *
 * Every run has:
 * - limits set by a small harness before the program starts: CPU time (a CPU-time interval timer
 *   at the limit, RLIMIT_CPU one second later as the backstop the program cannot lift), address
 *   space (RLIMIT_AS), processes (RLIMIT_NPROC: the sandbox user's count now plus a few), file size
 *   (RLIMIT_FSIZE), no core files, and the lowest CPU priority (nice 19) so decoding is not starved;
 * - a wall-clock limit on idle time (no thread running or waiting for a CPU, from schedstat), after
 *   which the program and everything it started are killed (a program that sleeps or blocks); a
 *   machine busy decoding slows a program down but never makes it time out (CPU time is the
 *   limit). The harness forks the test and supervises it as a child subreaper (or as the init of
 *   the new PID namespace), and kills what the program left running when it ends; the whole
 *   process group is killed from here if the harness itself overstays;
 * - a fresh temporary working folder, removed afterwards;
 * - an environment with nothing from the user's: PATH, HOME and TMPDIR (the work folder), LANG;
 *   python runs isolated (`-I`: no PYTHON* variables, no user site-packages);
 * - stdout kept up to a cap (more ends the test), stderr and the harness's report capped too.
 *
 * Where the machine allows it (probed once per process, recorded as `protections()`):
 * - a new network namespace (`unshare --net`): only a loopback that is down, so no network;
 * - a new PID namespace: the program cannot see or signal host processes, and everything it
 *   started dies with it, even processes that left the process group and escaped the supervisor;
 * - as root: the program runs as `nobody` (setpriv), never as root; otherwise as a user-namespace
 *   root mapped to the invoking user (no more rights than that user);
 * - no_new_privs: setuid programs cannot raise privileges.
 * Where namespaces are refused (containers, Ubuntu's AppArmor userns restriction), the program
 * runs as the invoking user (as nobody when that is root) with the host's network, and the
 * protections record why.
 *
 * The program and its test run in one process; the harness reports on fd 3. Generated code could
 * forge that report: the sandbox protects the host, it does not make scores robust against code
 * written to attack the grader.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MoiError, UsageError } from '@moi/core';

// ---- limits

export interface SandboxLimits {
  /** CPU seconds one test may use (LiveCodeBench's per-test limit is 6 s) */
  timeoutSeconds: number;
  /**
   * idle wall-clock seconds before the program is killed (default 4 × timeout + 2): time in which
   * it neither ran nor waited for a CPU, so a busy machine does not count (a sleeping program does)
   */
  wallSeconds: number;
  /** address space in MiB (RLIMIT_AS) */
  memoryMiB: number;
  /** processes (threads) the program may add to what the sandbox user already runs (RLIMIT_NPROC) */
  processes: number;
  /** stdout bytes kept beyond twice the expected output; more ends the test as output_limit */
  outputBytes: number;
  /** the largest file the program may write (RLIMIT_FSIZE) */
  fileBytes: number;
}

export const DEFAULT_TIMEOUT_SECONDS = 6;
export const DEFAULT_MEMORY_MIB = 4096;

export function sandboxLimits(o: Partial<SandboxLimits> = {}): SandboxLimits {
  const timeoutSeconds = o.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  return {
    timeoutSeconds,
    wallSeconds: o.wallSeconds ?? 4 * timeoutSeconds + 2,
    memoryMiB: o.memoryMiB ?? DEFAULT_MEMORY_MIB,
    processes: o.processes ?? 32,
    outputBytes: o.outputBytes ?? 1 << 20,
    fileBytes: o.fileBytes ?? 64 << 20,
  };
}

export interface SandboxOptions extends Partial<SandboxLimits> {
  /** tests run at once (default: the machine's cores) */
  workers?: number;
  /** the interpreter (default python3 on PATH) */
  python?: string;
}

// ---- what a run returns

export type TestInput =
  | { mode: 'stdin'; input: string; expectedBytes: number }
  | { mode: 'functional'; fnName: string; input: string; output: string };

export type RunStatus = 'ok' | 'timeout' | 'memory' | 'runtime_error' | 'output_limit';

export interface RunOutcome {
  status: RunStatus;
  /** the program's stdout (stdin tests) */
  stdout: string;
  /** functional tests: whether the returned value == the expected one, and its repr (shortened) */
  equal?: boolean;
  got?: string;
  /** what went wrong, for the report */
  detail: string;
  seconds: number;
}

export interface Protections {
  python: string;
  python_version: string;
  /** who the program runs as */
  user: string;
  /** a new network namespace: no network */
  network_namespace: boolean;
  /** a new PID namespace: host processes invisible, every descendant killed with the test */
  pid_namespace: boolean;
  no_new_privs: boolean;
  limits: {
    cpu_seconds: number;
    wall_seconds: number;
    address_space_mib: number;
    extra_processes: number;
    output_bytes: string;
    file_bytes: number;
  };
  /** the environment variables the program sees (names) */
  env: string[];
  workdir: string;
  priority: string;
  workers: number;
  /** protections that could not be had here, and why */
  degraded: string[];
}

// ---- the harness (Python, run before the program in the same process)

/**
 * The modules LiveCodeBench's checker imports (star and plain) before every program, and its
 * recursion limit: generated code that relies on them passes there, so it must pass here.
 */
const PRELUDE_MODULES = [
  'string',
  're',
  'datetime',
  'collections',
  'heapq',
  'bisect',
  'copy',
  'math',
  'random',
  'statistics',
  'itertools',
  'functools',
  'operator',
  'io',
  'sys',
  'json',
];
const PRELUDE =
  [
    ...PRELUDE_MODULES.map((m) => `from ${m} import *`),
    'from builtins import *',
    'from typing import *',
    ...PRELUDE_MODULES.map((m) => `import ${m}`),
    'sys.setrecursionlimit(50000)',
  ].join('\n') + '\n';

const HARNESS = String.raw`
import json, math, os, resource, signal, sys, time

_dumps, _write, _exit = json.dumps, os.write, os._exit

def say(obj):
    _write(3, (_dumps(obj) + "\n").encode("utf-8"))

def short(text, n=300):
    return text if len(text) <= n else text[: n // 2] + " ...(truncated)... " + text[-n // 2:]

def limit(which, soft, hard):
    _, cur = resource.getrlimit(which)
    if cur != resource.RLIM_INFINITY:
        soft, hard = min(soft, cur), min(hard, cur)
    resource.setrlimit(which, (soft, hard))

def tasks_of(uid):
    # RLIMIT_NPROC counts the threads of every process of the real uid
    n = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            owner, threads = None, 1
            with open("/proc/%s/status" % d) as f:
                for line in f:
                    if line.startswith("Uid:"):
                        owner = int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads = int(line.split()[1])
            if owner == uid:
                n += threads
        except (OSError, ValueError):
            pass
    return n

cfg = json.loads(sys.argv[1])
os.set_inheritable(3, False)
try:
    os.setpriority(os.PRIO_PROCESS, 0, 19)
except OSError:
    pass
memory = cfg["memory"]
limit(resource.RLIMIT_AS, memory, memory)
cpu_soft = int(math.ceil(cfg["cpu"]))
limit(resource.RLIMIT_CPU, cpu_soft + 1, cpu_soft + 2)
limit(resource.RLIMIT_FSIZE, cfg["fsize"], cfg["fsize"])
limit(resource.RLIMIT_CORE, 0, 0)
procs = tasks_of(os.getuid()) + cfg["procs"]
limit(resource.RLIMIT_NPROC, procs, procs)

# A supervisor and the test: the supervisor (a child subreaper, or the init of the new PID
# namespace, which ignores signals it has no handler for, such as SIGPROF and SIGXCPU) enforces
# the wall clock, says how the test ended, and kills whatever the program left running.
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    pass

def sweep():
    for _ in range(64):
        kids = []
        for task in os.listdir("/proc/self/task"):
            try:
                with open("/proc/self/task/%s/children" % task) as f:
                    kids += [int(p) for p in f.read().split()]
            except OSError:
                pass
        if not kids:
            return
        for p in kids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break

def busy(root):
    # nanoseconds the threads of the process tree under root have run or waited to run
    total, stack, seen = 0, [root], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/schedstat" % (p, t)) as f:
                    run, wait = f.read().split()[:2]
                total += int(run) + int(wait)
            except (OSError, ValueError):
                pass
            try:
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    stack += [int(x) for x in f.read().split()]
            except OSError:
                pass
    return total

child = os.fork()
if child:
    # The wall-clock limit counts idle time only: time in which no thread of the program ran or
    # waited for a CPU (schedstat), so a machine busy decoding never turns a slow start into a
    # timeout; without schedstat every second counts.
    idle, nap = 0.0, 0.001
    last_t, last_b = time.monotonic(), busy(child)
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        time.sleep(nap)
        nap = min(nap * 2, 0.05)
        now, b = time.monotonic(), busy(child)
        if not (b - last_b > 0.05 * (now - last_t) * 1e9 or b < last_b):
            idle += now - last_t
        last_t, last_b = now, b
        if idle > cfg["wall"]:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            sweep()
            say({"status": "wall"})
            _exit(1)
    sweep()
    if os.WIFSIGNALED(status):
        say({"status": "signal", "signal": os.WTERMSIG(status)})
        _exit(1)
    _exit(os.WEXITSTATUS(status))

with open("solution.py", encoding="utf-8") as f:
    source = f.read()
test = None
if cfg["mode"] == "functional":
    with open("test.json", encoding="utf-8") as f:
        test = json.load(f)
    os.unlink("test.json")
prelude = cfg["prelude"]
signal.setitimer(signal.ITIMER_PROF, cfg["cpu"])
try:
    code = compile(source, "solution.py", "exec")
    if test is None:
        scope = {"__name__": "__main__"}
        exec(prelude, scope)
        try:
            exec(code, scope)
        except SystemExit:
            pass
        sys.stdout.flush()
        say({"status": "ok"})
    else:
        scope = {"__name__": "solution"}
        exec(prelude, scope)
        exec(code, scope)
        name = test["fn_name"]
        if "class Solution" in source:
            target = getattr(scope["Solution"](), name)
        elif name in scope:
            target = scope[name]
        else:
            raise NameError("the program defines no %s" % name)
        args = [json.loads(line) for line in test["input"].split("\n")]
        expected = json.loads(test["output"])
        got = target(*args)
        if isinstance(got, tuple):
            got = list(got)
        say({"status": "ok", "equal": bool(got == expected), "got": short(repr(got))})
except BaseException as e:
    line = None
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "solution.py":
            line = tb.tb_lineno
        tb = tb.tb_next
    say({"status": "error", "type": type(e).__name__, "message": short(str(e)), "line": line})
    _exit(1)
`;

// ---- finding out what the machine allows

const PROBE =
  'import json, os, socket; print(json.dumps({"uid": os.getuid(), "pid": os.getpid(), "ifaces": [n for _, n in socket.if_nameindex()]}))';

const NOBODY = 65534;

interface Launch {
  prefix: string[];
  python: string;
  version: string;
  nobody: boolean;
  protections: Omit<Protections, 'limits' | 'workers' | 'env' | 'workdir' | 'priority'>;
}

interface Candidate {
  prefix: string[];
  user: string;
  network: boolean;
  pid: boolean;
  nobody: boolean;
  nnp: boolean;
}

function which(bin: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    if (!dir) continue;
    const p = path.join(dir, bin);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

function run(
  file: string,
  args: string[],
  opts: { env: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { env: opts.env, cwd: opts.cwd, timeout: opts.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : null
          : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && code === null ? err.message : '') });
      },
    );
  });
}

function candidates(root: boolean): Candidate[] {
  const unshare = which('unshare');
  const setpriv = which('setpriv');
  const out: Candidate[] = [];
  const nsVariants: { args: string[]; network: boolean; pid: boolean }[] = [
    { args: ['--net', '--pid', '--fork', '--kill-child', '--mount-proc'], network: true, pid: true },
    { args: ['--net'], network: true, pid: false },
  ];
  if (root) {
    // root: new namespaces need no user namespace; the program itself runs as nobody
    const drop = setpriv
      ? [setpriv, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--no-new-privs', '--']
      : null;
    if (drop) {
      if (unshare)
        for (const v of nsVariants)
          out.push({
            prefix: [unshare, ...v.args, '--', ...drop],
            user: `nobody (uid ${NOBODY})`,
            network: v.network,
            pid: v.pid,
            nobody: true,
            nnp: true,
          });
      out.push({ prefix: drop, user: `nobody (uid ${NOBODY})`, network: false, pid: false, nobody: true, nnp: true });
    }
    out.push({
      prefix: [],
      user: 'root (no setpriv to drop it)',
      network: false,
      pid: false,
      nobody: false,
      nnp: false,
    });
    return out;
  }
  const uid = process.getuid?.() ?? -1;
  const nnp = setpriv ? [setpriv, '--no-new-privs', '--'] : [];
  if (unshare) {
    for (const v of nsVariants) {
      out.push({
        prefix: [unshare, '--user', '--map-root-user', ...v.args, '--', ...nnp],
        user: `root of a new user namespace (uid ${uid} outside)`,
        network: v.network,
        pid: v.pid,
        nobody: false,
        nnp: nnp.length > 0,
      });
    }
  }
  out.push({
    prefix: nnp,
    user: `the invoking user (uid ${uid})`,
    network: false,
    pid: false,
    nobody: false,
    nnp: nnp.length > 0,
  });
  return out;
}

async function resolvePython(hint: string): Promise<{ python: string; version: string }> {
  const r = await run(hint, ['-c', 'import sys; print(sys.executable); print("%d.%d.%d" % sys.version_info[:3])'], {
    env: process.env,
    timeoutMs: 30_000,
  });
  const [exe, version] = r.stdout.trim().split('\n');
  if (r.code !== 0 || !exe || !version) {
    throw new UsageError(
      'E_NO_PYTHON',
      `running generated code needs Python 3.8+: "${hint}" could not be run (${(r.stderr || 'not found').trim().split('\n').pop()}); install python3 or pass --python PATH`,
    );
  }
  const [major, minor] = version.split('.').map(Number);
  if (major !== 3 || minor < 8)
    throw new UsageError(
      'E_NO_PYTHON',
      `${exe} is Python ${version}; running generated code needs Python 3.8+ (pass --python PATH)`,
    );
  return { python: exe, version };
}

const firstLine = (s: string) => s.trim().split('\n').filter(Boolean).pop() ?? '';

async function detect(hint: string): Promise<Launch> {
  const { python, version } = await resolvePython(hint);
  const root = process.geteuid?.() === 0;
  const degraded: string[] = [];
  // nobody cannot run an interpreter under root's home (pyenv): fall back to the system's
  const pythons = [
    python,
    ...['/usr/bin/python3', '/usr/local/bin/python3'].filter((p) => fs.existsSync(p) && p !== python),
  ];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-sandbox-probe-'));
  try {
    fs.chmodSync(dir, 0o755);
    for (const c of candidates(root)) {
      for (const py of c.nobody ? pythons : [python]) {
        const [file, ...args] = [...c.prefix, py, '-I', '-c', PROBE];
        const r = await run(file, args, { env: { PATH: '/usr/bin:/bin' }, cwd: dir, timeoutMs: 20_000 });
        let probe: { uid?: number; pid?: number; ifaces?: string[] } = {};
        try {
          probe = JSON.parse(r.stdout) as typeof probe;
        } catch {
          /* failed */
        }
        const why =
          r.code !== 0
            ? firstLine(r.stderr) || `exit ${r.code}`
            : c.network && !(probe.ifaces ?? []).every((n) => n === 'lo')
              ? `network interfaces ${probe.ifaces?.join(', ')} still visible`
              : c.pid && probe.pid !== 1
                ? 'not pid 1 of a new PID namespace'
                : c.nobody && probe.uid !== NOBODY
                  ? `runs as uid ${probe.uid}, not nobody`
                  : null;
        if (why) {
          const what = c.network
            ? `${c.pid ? 'network + PID' : 'network'} namespace${c.nobody ? ' as nobody' : ''}`
            : c.nobody
              ? 'running as nobody'
              : 'no_new_privs';
          degraded.push(`${what} (${path.basename(py)}): ${why}`);
          continue;
        }
        if (py !== python) degraded.push(`${python} is not usable by nobody; ${py} runs the code`);
        if (!c.network) degraded.push("no network namespace: the program has the host's network");
        if (!c.pid)
          degraded.push(
            'no PID namespace: the program sees host processes, and one that leaves its process group can outlive the test',
          );
        if (!c.nobody && root) degraded.push('the program runs as root');
        if (!c.nnp) degraded.push('no setpriv: no_new_privs is off');
        const pyVersion = py === python ? version : (await resolvePython(py)).version;
        return {
          prefix: c.prefix,
          python: py,
          version: pyVersion,
          nobody: c.nobody,
          protections: {
            python: py,
            python_version: pyVersion,
            user: c.user,
            network_namespace: c.network,
            pid_namespace: c.pid,
            no_new_privs: c.nnp,
            degraded,
          },
        };
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  throw new MoiError('E_SANDBOX', `cannot run ${python} in any sandbox here: ${degraded.join('; ')}`);
}

// ---- a small counting semaphore

class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(n: number) {
    this.free = n;
  }
  async take(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

// ---- the sandbox

const SIGNAL_NAMES = new Map(Object.entries(os.constants.signals).map(([name, n]) => [n as number, name]));

export class Sandbox {
  readonly limits: SandboxLimits;
  readonly workers: number;
  private readonly python: string;
  private launch: Promise<Launch> | null = null;
  private readonly slots: Slots;

  constructor(opts: SandboxOptions = {}) {
    this.limits = sandboxLimits(opts);
    this.workers = opts.workers ?? os.availableParallelism();
    this.python = opts.python ?? 'python3';
    this.slots = new Slots(this.workers);
    const l = this.limits;
    if (
      !(l.timeoutSeconds > 0) ||
      !(l.wallSeconds > 0) ||
      !(l.memoryMiB >= 64) ||
      !Number.isInteger(this.workers) ||
      this.workers < 1
    ) {
      throw new UsageError(
        'E_USAGE',
        `sandbox limits: timeout > 0 s, wall > 0 s, memory >= 64 MiB and workers >= 1 (got ${l.timeoutSeconds} s, ${l.wallSeconds} s, ${l.memoryMiB} MiB, ${this.workers})`,
      );
    }
  }

  private ready(): Promise<Launch> {
    this.launch ??= detect(this.python);
    return this.launch;
  }

  /** What protects the host here (probes the machine on first use). */
  async protections(): Promise<Protections> {
    const l = await this.ready();
    return {
      ...l.protections,
      limits: {
        cpu_seconds: this.limits.timeoutSeconds,
        wall_seconds: this.limits.wallSeconds,
        address_space_mib: this.limits.memoryMiB,
        extra_processes: this.limits.processes,
        output_bytes: `${this.limits.outputBytes} + 2 × expected`,
        file_bytes: this.limits.fileBytes,
      },
      env: Object.keys(this.env('/tmp/x')),
      workdir: 'a fresh temporary folder per test, removed afterwards',
      priority: 'nice 19 (decoding first)',
      workers: this.workers,
    };
  }

  private env(dir: string): Record<string, string> {
    return { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: dir, TMPDIR: dir, LANG: 'C.UTF-8' };
  }

  /** Run `code` on one test. Rejects only when aborted or when no process can be started. */
  async run(code: string, test: TestInput, signal?: AbortSignal): Promise<RunOutcome> {
    const launch = await this.ready();
    await this.slots.take();
    let dir: string | null = null;
    try {
      if (signal?.aborted) throw signal.reason ?? new Error('aborted');
      try {
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-sandbox-'));
        fs.writeFileSync(path.join(dir, 'solution.py'), code);
        if (test.mode === 'functional')
          fs.writeFileSync(
            path.join(dir, 'test.json'),
            JSON.stringify({ fn_name: test.fnName, input: test.input, output: test.output }),
          );
        if (launch.nobody) {
          for (const f of fs.readdirSync(dir)) fs.chownSync(path.join(dir, f), NOBODY, NOBODY);
          fs.chownSync(dir, NOBODY, NOBODY);
        }
      } catch (err) {
        throw new MoiError('E_SANDBOX', `cannot prepare a work folder in ${os.tmpdir()}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      return await this.exec(launch, dir, test, signal);
    } finally {
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
      this.slots.give();
    }
  }

  private exec(launch: Launch, dir: string, test: TestInput, signal?: AbortSignal): Promise<RunOutcome> {
    const l = this.limits;
    const cfg = {
      mode: test.mode,
      cpu: l.timeoutSeconds,
      wall: l.wallSeconds,
      memory: l.memoryMiB * 2 ** 20,
      procs: l.processes,
      fsize: l.fileBytes,
      prelude: PRELUDE,
    };
    const cap = l.outputBytes + 2 * (test.mode === 'stdin' ? test.expectedBytes : 0);
    const [file, ...args] = [
      ...launch.prefix,
      launch.python,
      '-I',
      '-B',
      '-X',
      'utf8',
      '-c',
      HARNESS,
      JSON.stringify(cfg),
    ];
    const t0 = performance.now();
    return new Promise<RunOutcome>((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = spawn(file, args, {
          cwd: dir,
          env: this.env(dir),
          detached: true,
          stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
        });
      } catch (err) {
        reject(new MoiError('E_SANDBOX', `cannot start ${file}: ${(err as Error).message}`, { cause: err }));
        return;
      }
      const out: Buffer[] = [];
      let outBytes = 0;
      let err = '';
      let report = '';
      let killedFor: 'wall' | 'output' | 'abort' | null = null;
      let exited: { code: number | null; sig: NodeJS.Signals | null } | null = null;
      let settled = false;
      let drain: NodeJS.Timeout | undefined;
      const killGroup = (why: 'wall' | 'output' | 'abort') => {
        killedFor ??= why;
        if (exited) return; // its pid may be reused: never signal a group that has ended
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          /* already gone */
        }
      };
      // the harness keeps the (idle) wall clock itself and cleans up; this is the backstop for a
      // harness that cannot, generous because a starved program may run slowly
      const wall = setTimeout(() => killGroup('wall'), Math.max(600, 20 * l.wallSeconds) * 1000);
      const onAbort = () => killGroup('abort');
      signal?.addEventListener('abort', onAbort, { once: true });

      child.stdout!.on('data', (d: Buffer) => {
        if (killedFor) return;
        outBytes += d.length;
        if (outBytes > cap) {
          killGroup('output');
          return;
        }
        out.push(d);
      });
      child.stderr!.setEncoding('utf8').on('data', (d: string) => {
        err = (err + d).slice(-16_384);
      });
      const fd3 = child.stdio[3] as NodeJS.ReadableStream;
      fd3.setEncoding('utf8');
      fd3.on('data', (d: string) => {
        if (report.length < 65_536) report += d;
      });
      const stdin = child.stdin!;
      stdin.on('error', () => {
        /* the program exited without reading all of its input */
      });
      stdin.end(test.mode === 'stdin' ? test.input : '');

      const finish = () => {
        if (settled || !exited) return;
        settled = true;
        clearTimeout(wall);
        clearTimeout(drain);
        signal?.removeEventListener('abort', onAbort);
        // a process that escaped the group may still hold the pipes: stop reading them
        for (const s of [child.stdout, child.stderr, child.stdio[3]])
          (s as NodeJS.ReadableStream & { destroy?: () => void })?.destroy?.();
        if (killedFor === 'abort') {
          reject(signal?.reason ?? new Error('aborted'));
          return;
        }
        resolve(
          classify({
            killedFor,
            code: exited.code,
            sig: exited.sig,
            report,
            stderr: err,
            stdout: Buffer.concat(out).toString('utf8'),
            seconds: (performance.now() - t0) / 1000,
            limits: l,
            cap,
          }),
        );
      };
      child.on('error', (e) => {
        if (settled) return;
        settled = true;
        clearTimeout(wall);
        signal?.removeEventListener('abort', onAbort);
        reject(new MoiError('E_SANDBOX', `cannot run ${file}: ${e.message}`, { cause: e }));
      });
      child.on('exit', (code, sig) => {
        exited = { code, sig };
        // the harness has killed what the program left; give the pipes a moment to drain (a
        // process that escaped it may hold them open)
        drain = setTimeout(finish, 500);
      });
      child.on('close', () => finish());
    });
  }
}

// ---- what happened

interface Ended {
  killedFor: 'wall' | 'output' | 'abort' | null;
  code: number | null;
  sig: NodeJS.Signals | null;
  report: string;
  stderr: string;
  stdout: string;
  seconds: number;
  limits: SandboxLimits;
  cap: number;
}

interface Report {
  status?: string;
  type?: string;
  message?: string;
  line?: number | null;
  equal?: boolean;
  got?: string;
  signal?: number;
}

function lastReport(text: string): Report | null {
  const lines = text.split('\n').filter(Boolean);
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      const r = JSON.parse(lines[i]) as Report;
      if (r && typeof r === 'object') return r;
    } catch {
      /* a torn line */
    }
  }
  return null;
}

function fromSignal(name: string, e: Ended, base: Omit<RunOutcome, 'status' | 'detail'>): RunOutcome {
  if (name === 'SIGPROF' || name === 'SIGXCPU')
    return { ...base, status: 'timeout', detail: `CPU time limit (${e.limits.timeoutSeconds} s)` };
  if (/MemoryError|Cannot allocate memory|out of memory/i.test(e.stderr))
    return { ...base, status: 'memory', detail: `out of memory (${e.limits.memoryMiB} MiB) and killed by ${name}` };
  const hint = name === 'SIGKILL' ? ' (the CPU hard limit, or the kernel out of memory)' : '';
  return {
    ...base,
    status: 'runtime_error',
    detail: `killed by ${name}${hint}${e.stderr ? `: ${firstLine(e.stderr)}` : ''}`,
  };
}

function classify(e: Ended): RunOutcome {
  const base = { stdout: e.stdout, seconds: e.seconds };
  if (e.killedFor === 'wall')
    return {
      ...base,
      status: 'timeout',
      detail: `the harness overstayed (${Math.max(600, 20 * e.limits.wallSeconds)} s)`,
    };
  if (e.killedFor === 'output')
    return { ...base, stdout: '', status: 'output_limit', detail: `more than ${e.cap} bytes of output` };
  const r = lastReport(e.report);
  if (r?.status === 'error') {
    const where = r.line ? ` (line ${r.line})` : '';
    if (r.type === 'MemoryError')
      return {
        ...base,
        status: 'memory',
        detail: `MemoryError${where}: over the ${e.limits.memoryMiB} MiB address-space limit`,
      };
    return { ...base, status: 'runtime_error', detail: `${r.type}${where}${r.message ? `: ${r.message}` : ''}` };
  }
  if (r?.status === 'wall')
    return { ...base, status: 'timeout', detail: `idle for ${e.limits.wallSeconds} s (wall-clock limit)` };
  if (r?.status === 'signal' && typeof r.signal === 'number')
    return fromSignal(SIGNAL_NAMES.get(r.signal) ?? `signal ${r.signal}`, e, base);
  if (e.sig) return fromSignal(e.sig, e, base);
  if (r?.status === 'ok')
    return {
      ...base,
      status: 'ok',
      detail: '',
      ...(r.equal !== undefined ? { equal: r.equal, got: r.got ?? '' } : {}),
    };
  // no report: the program ended its process itself (os._exit) or python failed before the harness
  if (e.code === 0) return { ...base, status: 'ok', detail: '' };
  return {
    ...base,
    status: 'runtime_error',
    detail: `exit code ${e.code}${e.stderr ? `: ${firstLine(e.stderr)}` : ''}`,
  };
}
