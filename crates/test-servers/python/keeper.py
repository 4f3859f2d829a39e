"""Keeps one test server (moto or LocalStack) up while tests use it, then stops it.

test-servers (src/keeper.rs) starts it, in a process group of its own so that a Ctrl-C or a kill of the test run's
group does not reach it, when a test finds nothing answering at the server's endpoint:

    python keeper.py STATE_DIR SERVER_COMMAND...

Test processes hold a shared lock on STATE_DIR/users for as long as they live, and record the process that runs them
as STATE_DIR/runs/<pid>. The server stays up while a test process lives, or while a run that started one does
(cargo, cargo-nextest: so that cargo's next test binary finds it still there). Once neither holds for GRACE_SECONDS,
the keeper takes the lock exclusively, so that no test process starts using the server as it goes, stops the server,
and exits. If the keeper itself dies, even by SIGKILL, the kernel kills the server (PR_SET_PDEATHSIG, Linux).
"""

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time

POLL_SECONDS = 0.5
# Covers a test process that has started the server's run but not yet registered, and the gap between two test
# processes of a run that is not cargo's or nextest's (test binaries run by hand, one after another).
GRACE_SECONDS = 2.0
# LocalStack shuts down in a few seconds; this bounds a shutdown that hangs.
STOP_SECONDS = 10.0
PR_SET_PDEATHSIG = 1
# The processes that run test binaries, and live from the first to the last (the name /proc/<pid>/comm gives).
RUNNERS = ("cargo", "cargo-nextest")


def die_with_keeper(keeper):
    """Runs in the server's process between fork and exec: the kernel is to kill it when the keeper dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != keeper:
        # The keeper died before the request above took effect.
        os._exit(1)


def run_alive(runs, pid):
    """Whether the run recorded as runs/<pid> is still going; forgets it once it is not. Checking the name as well
    as the pid keeps a recycled pid from holding the server up."""
    try:
        with open(f"/proc/{pid}/comm") as comm:
            alive = comm.read().strip() in RUNNERS
    except OSError:
        alive = False
    if not alive:
        try:
            os.remove(os.path.join(runs, pid))
        except FileNotFoundError:
            pass
    return alive


def in_use(users, runs):
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(users, fcntl.LOCK_UN)
    # A list, not a generator: every finished run is forgotten, not only those before the first live one.
    return any([run_alive(runs, pid) for pid in os.listdir(runs)])


def say(message):
    print(f"{time.strftime('%H:%M:%S')} keeper {os.getpid()}: {message}", flush=True)


def stop(server):
    server.terminate()
    try:
        server.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def main():
    state, command = sys.argv[1], sys.argv[2:]
    runs = os.path.join(state, "runs")
    keeper = os.getpid()
    with open(os.path.join(state, "server.log"), "wb") as log:
        server = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: die_with_keeper(keeper),
        )
    say(f"server {server.pid}: {' '.join(command)}")

    def stop_and_exit(signum, _frame):
        say(f"signal {signum}, stopping the server")
        stop(server)
        sys.exit(0)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop_and_exit)

    with open(os.path.join(state, "users"), "a") as users:
        idle_since = None
        while server.poll() is None:
            time.sleep(POLL_SECONDS)
            if in_use(users, runs):
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= GRACE_SECONDS:
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    idle_since = None
                    continue
                say("no test uses the server any more, stopping it")
                stop(server)
                say(f"the server stopped ({server.returncode})")
                # Exiting releases the lock: a test process waiting for it finds nothing answering, and starts anew.
                return
    say(f"the server exited by itself ({server.returncode})")
    sys.exit(1)


if __name__ == "__main__":
    main()
