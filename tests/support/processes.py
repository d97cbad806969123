"""Process-tree checks shared by the recipe end-to-end tests: what a run started, and what survived it."""

import os

import psutil


def process_tree(pid: int) -> set:
    """The process and all its descendants (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        return {root, *root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(procs) -> list[str]:
    """'pid cmdline' of every process in procs still running (zombies count as dead)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


def listening_sockets(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket owned by one of ``pids``, from the kernel's
    socket table (psutil reads /proc/net/tcp and /proc/net/tcp6)."""
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def pid_alive(pid: int) -> bool:
    """The PID runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group: killed members stay in the group as zombies
    until their parent reaps them, so they do not count."""
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return out
