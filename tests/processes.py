"""Starting the processes of one multi-process run from a test."""

import subprocess


def run_together(commands, envs, cwd, timeout: float) -> list[tuple[int, str]]:
    """Starts every command at once (the processes of one run wait for each other at start-up)
    and waits for all -> [(return code, stdout and stderr), ...] in command order."""
    procs = [
        subprocess.Popen(
            command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for command, env in zip(commands, envs)
    ]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out) for p, out in zip(procs, outputs)]
