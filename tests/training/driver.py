"""`python -m tests.training.driver <train.py flags>`: train.py with crash hooks for tests.

The hooks make a real SIGKILL land at a chosen point, deterministically (environment):
  S2T_TEST_KILL_AFTER_STEPS=k  SIGKILL after this process has logged k train steps
                               (log_interval=1: right after its k-th update);
  S2T_TEST_KILL_IN_SAVE=1      SIGKILL inside the first checkpoint save of this process,
                               while Orbax's background thread is writing it;
  S2T_TEST_SIGTERM_AFTER_STEPS=k  SIGTERM (a preemption notice) after k logged train steps.
They patch only this process; train.py itself has no test code.
"""

import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_hooks():
    kill_after = int(os.environ.get("S2T_TEST_KILL_AFTER_STEPS", "0"))
    term_after = int(os.environ.get("S2T_TEST_SIGTERM_AFTER_STEPS", "0"))
    if kill_after or term_after:
        from s2t_jax.training import metrics_writer

        write, seen = metrics_writer.MetricWriter.write, []

        def hooked_write(self, step, split, metrics):
            write(self, step, split, metrics)
            if split != "train":
                return
            seen.append(step)
            if len(seen) == kill_after:
                print(f"driver: SIGKILL after step {step}", flush=True)
                _die()
            if len(seen) == term_after:
                print(f"driver: SIGTERM after step {step}", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)

        metrics_writer.MetricWriter.write = hooked_write
    if os.environ.get("S2T_TEST_KILL_IN_SAVE") == "1":
        # The JSON item (our metadata) is written by Orbax's commit thread, next to the arrays.
        from orbax.checkpoint._src.handlers import json_checkpoint_handler as jh

        save_fn = jh.JsonCheckpointHandler._save_fn

        async def killing_save_fn(self, x, directory):
            print(f"driver: SIGKILL while saving into {directory}", flush=True)
            _die()
            return await save_fn(self, x, directory)

        jh.JsonCheckpointHandler._save_fn = killing_save_fn


def main():
    sys.path.insert(0, ROOT)
    install_hooks()
    from absl import app

    import train

    sys.argv[0] = os.path.join(ROOT, "train.py")
    app.run(train.main)


if __name__ == "__main__":
    main()
