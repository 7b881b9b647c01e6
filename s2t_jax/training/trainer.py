"""`train_and_evaluate(config, workdir)`: the one training loop, in sections.

    mesh -> input -> model + optimiser -> shard + restore -> update step -> checkpoint
    -> evals -> loop

Devices form a ('data', 'fsdp', 'tensor') mesh (config.mesh); every array of the state gets
its layout from its logical axis names and the rules table (config.sharding.rules, see
s2t_jax/training/sharding.py). By default that is data parallelism: the batch is split over every
device, params and optimiser state are replicated, and XLA inserts the gradient all-reduce;
fsdp > 1 also shards params and optimiser state. With several processes each one loads its own
rows of every batch, and only process 0 writes logs. The update step is jitted once with its
shardings stated and the state donated; each batch bucket compiles once (ahead of time, so the
log shows the compile time of each shape).

Restarting on the same workdir resumes from the newest good checkpoint (state, data position
and seed), bit-exactly; a torn or corrupt newest one is set aside (training/checkpointing.py,
training/resilience.py).
SIGTERM saves the current step and returns normally. A non-finite update is never applied;
config.nan_policy decides whether it is skipped or stops the run.

The helpers each section calls live in modules named for their idea: task.py and
train_state.py (the criterion and the pure steps), checkpointing.py, evals.py, train_metrics.py
(train logging and the non-finite check), pretrained.py; the workdir layout is
s2t_jax/checkpoints/workdir.py.
"""

from __future__ import annotations

import functools
import os
import time

import jax
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from s2t_jax.checkpoints.workdir import write_run_files
from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.loader import make_loader
from s2t_jax.data.split import load_split
from s2t_jax.parallel.mesh import make_mesh, process_row_indices
from s2t_jax.training import flops, resilience, sharding, train_metrics, train_state
from s2t_jax.training.checkpointing import RunCheckpoints
from s2t_jax.training.evals import Evals
from s2t_jax.training.metrics_writer import MetricWriter
from s2t_jax.training.pretrained import load_pretrained_encoder
from s2t_jax.training.task import Task, model_config_from, specaugment_policy
from s2t_jax.training.train_state import DEVICE_KEYS


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains per `config` in `workdir`; returns a summary (final step, last metrics, compiles)."""
    workdir = os.path.abspath(workdir)
    is_main = jax.process_index() == 0
    resilience.check_writable(workdir)
    if config.nan_policy not in resilience.NAN_POLICIES:
        raise ValueError(f"nan_policy={config.nan_policy!r}: expected {resilience.NAN_POLICIES}")

    # --- Mesh ------------------------------------------------------------------------------------
    mesh = make_mesh(config.mesh, config.num_devices, physical_layout=True)
    rules = tuple(tuple(r) for r in config.sharding.rules)
    devices = list(mesh.devices.flat)
    replicated = NamedSharding(mesh, P())
    batch_spec = sharding.batch_spec(mesh, rules)
    data_sharding = NamedSharding(mesh, batch_spec)
    num_shards = sharding.batch_shards(mesh, rules)
    if len(process_row_indices(data_sharding, num_shards)) * jax.process_count() != (num_shards):
        raise ValueError(
            f"mesh {dict(mesh.shape)}: each process must hold its own 1/{jax.process_count()} "
            "of the batch (keep the 'tensor' axis within a host)"
        )
    logging.info(
        "mesh: %s, %d devices (%s), %d processes, batch split %d ways",
        dict(mesh.shape),
        len(devices),
        devices[0].device_kind,
        jax.process_count(),
        num_shards,
    )
    if devices[0].platform == "cpu" and config.cpu_unrolled_threefry:
        train_state.use_unrolled_threefry_on_cpu()

    # --- Input -----------------------------------------------------------------------------------
    data = DataConfig.load(config.data.root, config.data.config_yaml)
    encoder = data.target_encoder()
    model_config = model_config_from(config, encoder.vocab_size)
    max_frames = min(model_config.max_source_positions, max(config.data.buckets))
    split_args = dict(
        max_frames=max_frames,
        max_target_positions=model_config.max_target_positions,
        skip_bad_rows=config.data.skip_bad_audio,
    )
    loader_args = dict(
        frame_buckets=config.data.buckets,
        max_tokens=config.max_tokens,
        seed=config.seed,
        num_shards=num_shards,
        max_sentences=config.data.max_sentences or None,
        skip_bad_audio=config.data.skip_bad_audio,
        worker_count=config.data.num_workers,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    train_split = load_split(data, config.data.train_subset, encoder, **split_args)
    train_loader = make_loader(
        data,
        train_split,
        config.data.train_subset,
        is_train=True,
        num_epochs=config.max_epoch or 10**6,
        **loader_args,
    )
    valid_loader = None
    if config.data.valid_subset:
        valid_split = load_split(data, config.data.valid_subset, encoder, **split_args)
        valid_loader = make_loader(
            data, valid_split, config.data.valid_subset, is_train=False, **loader_args
        )
    for b in train_loader.buckets:
        logging.info(
            "train bucket: %d frames x %d utterances, targets %d",
            b.frames,
            b.batch_size,
            b.target_len,
        )
    if is_main:
        write_run_files(config, workdir, model_config, data)

    def put(batch):
        return {
            k: jax.make_array_from_process_local_data(data_sharding, v) for k, v in batch.items()
        }

    # --- Model + optimiser -----------------------------------------------------------------------
    activations = None
    if num_shards > 1:  # batch-major activations stay batch-sharded; other dims free
        activations = NamedSharding(mesh, P(batch_spec[0], P.UNCONSTRAINED, P.UNCONSTRAINED))
    task = Task.from_config(
        config,
        model_config,
        specaugment_policy(config, data, config.data.train_subset),
        activation_sharding=activations,
    )
    init = functools.partial(train_state.init_state, task)
    abstract = jax.eval_shape(init, jax.random.key(0))
    state_sharding = sharding.tree_shardings(abstract, mesh, rules)
    logging.info(
        "model: %.2fM parameters, specaugment %s",
        sum(x.size for x in jax.tree.leaves(abstract["params"]["model"])) / 1e6,
        task.specaugment,
    )
    logging.info("state layout: %s", sharding.describe(abstract, state_sharding))

    # --- Shard + restore -------------------------------------------------------------------------
    checkpoints = RunCheckpoints(config, workdir)
    seed = config.seed
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_sharding
    )
    restored = checkpoints.restore(target)
    if restored is not None:
        state, meta, _ = restored
        train_loader.set_state(meta["data"])
        seed = meta.get("seed", seed)
        logging.info(
            "resumed from step %d (batch %d of the data plan)",
            int(state["step"]),
            train_loader.consumed,
        )
    else:
        state = jax.jit(init, out_shardings=state_sharding)(jax.random.key(seed))
        if config.load_pretrained_encoder_from:
            params, stats = load_pretrained_encoder(
                config.load_pretrained_encoder_from,
                jax.device_get(state["params"]),
                jax.device_get(state.get("batch_stats")),
            )
            state = {**state, "params": jax.device_put(params, state_sharding["params"])}
            if stats is not None:
                state["batch_stats"] = jax.device_put(stats, state_sharding["batch_stats"])
    held = sharding.bytes_per_device(state)
    logging.info("train state: %.1f MiB per device", max(held.values()) / 2**20)
    rng = jax.random.key(seed)

    # --- Update step -----------------------------------------------------------------------------
    traces = {"train": 0}

    def step_fn(state, batch, rng):
        traces["train"] += 1  # runs at trace time only: counts compilations
        return train_state.train_step(task, state, batch, rng)

    train_step = jax.jit(
        step_fn,
        in_shardings=(state_sharding, data_sharding, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )
    eval_step = jax.jit(
        functools.partial(train_state.eval_step, task),
        in_shardings=(train_state.eval_params(state_sharding), data_sharding),
        out_shardings=replicated,
    )
    compiled = {}

    def compiled_step(batch):
        key = tuple((k, v.shape) for k, v in batch.items())
        if key not in compiled:
            start = time.perf_counter()
            compiled[key] = train_step.lower(state, batch, rng).compile()
            seconds = time.perf_counter() - start
            window["paused"] += seconds  # not counted as step time
            writer.write(
                int(jax.device_get(state["step"])),
                "compile",
                {"seconds": seconds, "frames": batch["features"].shape[1]},
            )
        return compiled[key]

    # --- Checkpoint ------------------------------------------------------------------------------
    def save(step, metrics=None):
        checkpoints.save(step, state, train_loader, seed, metrics)

    # --- Evals -----------------------------------------------------------------------------------
    evals = None
    if valid_loader is not None:
        evals = Evals(
            config,
            valid_loader,
            put,
            eval_step,
            model_config,
            data,
            data_sharding,
            train_state.eval_params(state_sharding),
        )

    def run_evals(step):
        return None if evals is None else evals(step, train_state.eval_params(state), writer)

    # --- Loop ------------------------------------------------------------------------------------
    writer = MetricWriter(workdir, enabled=is_main)
    step = int(jax.device_get(state["step"]))
    writer.write(step, "data", train_metrics.data_metrics(train_split, train_loader))
    peak = flops.peak_flops(
        devices[0], model_config.dtype, config.peak_flops, measure_cpu=config.measure_cpu_peak
    )
    pending, window = [], train_metrics.new_window()
    last_valid, last_train = None, None
    saved_at = step if checkpoints.latest_step() == step else None
    where = []  # (update, utterance rows) of each pending micro-batch: named if it is not finite
    skipped = preempted = 0
    preemption = resilience.Preemption()
    try:
        while step < config.max_update:
            try:
                host = next(train_loader)
            except StopIteration:
                logging.info("data exhausted after %d epochs", config.max_epoch)
                break
            batch = put({k: host[k] for k in DEVICE_KEYS})
            window["bad"] += int(host["bad"].sum())
            b, t = host["features"].shape[:2]
            window["flops"] += flops.train_flops(
                model_config,
                b * jax.process_count(),
                t,
                host["target"].shape[1],
                task.ctc_weight > 0,
            )
            state, metrics = compiled_step(batch)(state, batch, rng)
            pending.append(metrics)
            where.append((step + 1, host["index"]))
            if len(pending) % task.update_freq:
                continue
            step += 1
            window["updates"] += 1
            if step % config.log_interval == 0 or step == config.max_update:
                fetched = jax.device_get(pending)
                skipped += train_metrics.check_finite(
                    fetched, where, config.nan_policy, train_split.ids
                )
                last_train = train_metrics.log_train(
                    writer, step, fetched, window, peak, len(devices), train_loader
                )
                pending, where = [], []
            preempted = preemption.reached(step)
            do_save = (
                preempted or step % config.save_interval_updates == 0 or step == config.max_update
            )
            do_valid = not preempted and (
                do_save
                or (
                    config.validate_interval_updates
                    and step % config.validate_interval_updates == 0
                )
            )
            paused = time.perf_counter()
            if do_valid:
                last_valid = run_evals(step)
            if do_save:
                save(step, last_valid if do_valid else None)
                saved_at = step
            window["paused"] += time.perf_counter() - paused
            if preempted:
                break
        if pending:
            skipped += train_metrics.check_finite(
                jax.device_get(pending), where, config.nan_policy, train_split.ids
            )
        if saved_at != step:
            last_valid = run_evals(step)
            save(step, last_valid)
    finally:
        preemption.close()
        train_loader.close()
        writer.close()
        checkpoints.close()
    if preempted:
        logging.warning("preempted: saved step %d, stopping", step)
    return {
        "step": step,
        "train": last_train,
        "valid": last_valid,
        "train_compiles": traces["train"],
        "epoch": train_loader.epoch_of(),
        "skipped_updates": skipped,
        "preempted": bool(preempted),
    }
