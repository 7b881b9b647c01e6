"""`train_and_evaluate(config, workdir)`: the one training loop, in sections.

    mesh -> input -> model + optimiser -> shard + restore -> update step -> checkpoint
    -> evals -> loop

Devices form a ('data', 'fsdp', 'tensor') mesh (config.mesh); every array of the state gets
its layout from its logical axis names and the rules table (config.sharding.rules, see
s2t_jax/sharding.py). By default that is data parallelism: the batch is split over every
device, params and optimiser state are replicated, and XLA inserts the gradient all-reduce;
fsdp > 1 also shards params and optimiser state. With several processes each one loads its own
rows of every batch, and only process 0 writes logs. The update step is jitted once with its
shardings stated and the state donated; each batch bucket compiles once (ahead of time, so the
log shows the compile time of each shape).

Restarting on the same workdir resumes from the newest good checkpoint (state, data position
and seed), bit-exactly; a torn or corrupt newest one is set aside (s2t_jax/resilience.py).
SIGTERM saves the current step and returns normally. A non-finite update is never applied;
config.nan_policy decides whether it is skipped or stops the run.

Workdir layout: checkpoints/<step>/ (Orbax), model_config.json, train_config.json,
data/ (copies of the vocabulary files), metrics.jsonl, tensorboard/.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from s2t_jax.checkpoints import orbax_io
from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.pipeline import load_split, make_loader
from s2t_jax.frontend.specaugment import POLICIES
from s2t_jax.parallel.mesh import make_mesh, process_row_indices, process_rows
from s2t_jax.training import flops, resilience, sharding, train_state, validation
from s2t_jax.training.metrics_writer import MetricWriter
from s2t_jax.training.train_state import DEVICE_KEYS, Task

SUM_KEYS = (
    "loss",
    "nll_loss",
    "n_correct",
    "n_total",
    "ntokens",
    "nsentences",
    "frames",
    "ctc_loss",
)


def _specaugment_policy(config, data: DataConfig, subset: str):
    """config.specaugment: "" = as the data config says, "none" = off, or a policy name."""
    choice = config.specaugment
    if choice == "":
        return data.specaugment(subset, is_train=True)
    if choice == "none":
        return None
    if choice not in POLICIES:
        raise ValueError(f"specaugment={choice!r}: expected '', 'none' or one of {list(POLICIES)}")
    return POLICIES[choice]


def _load_pretrained_encoder(path: str, params: dict) -> dict:
    """fairseq's --load-pretrained-encoder-from: copy encoder weights from a model dir (ours or
    transformers'), a fairseq .pt, or another training workdir."""
    if os.path.isdir(os.path.join(path, orbax_io.CHECKPOINT_DIR)):
        _, source, _ = orbax_io.load_train_checkpoint(path)
    else:
        from s2t_jax.modeling import Speech2TextForConditionalGeneration

        source = Speech2TextForConditionalGeneration.from_pretrained(path).params
    new, old = source["encoder"], params["model"]["encoder"]
    shapes_new = jax.tree.map(np.shape, new)
    shapes_old = jax.tree.map(np.shape, old)
    if shapes_new != shapes_old:
        raise ValueError(f"{path}: encoder shapes differ from this model's")
    new = jax.tree.map(lambda n, o: np.asarray(n, o.dtype), new, old)
    logging.info("loaded the pretrained encoder from %s", path)
    return {**params, "model": {**params["model"], "encoder": new}}


def _save_run_files(config, workdir, model_config, data: DataConfig):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, orbax_io.MODEL_CONFIG_FILE), "w") as f:
        json.dump(model_config.to_dict(), f, indent=2, sort_keys=True)
    with open(os.path.join(workdir, "train_config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    files = os.path.join(workdir, "data")
    os.makedirs(files, exist_ok=True)
    for src in (data.vocab_path, data.spm_path):
        if src and os.path.isfile(src):
            shutil.copy2(src, files)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains per `config` in `workdir`; returns a summary (final step, last metrics, compiles)."""
    workdir = os.path.abspath(workdir)
    is_main = jax.process_index() == 0
    resilience.check_writable(workdir)
    if config.nan_policy not in resilience.NAN_POLICIES:
        raise ValueError(f"nan_policy={config.nan_policy!r}: expected {resilience.NAN_POLICIES}")

    # --- Mesh ------------------------------------------------------------------------------------
    mesh = make_mesh(config.mesh, config.num_devices)
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
    model_config = train_state.model_config_from(config, encoder.vocab_size)
    max_frames = min(model_config.max_source_positions, max(config.data.buckets))
    split_args = dict(max_frames=max_frames, max_target_positions=model_config.max_target_positions)
    loader_args = dict(
        frame_buckets=config.data.buckets,
        max_tokens=config.max_tokens,
        seed=config.seed,
        num_shards=num_shards,
        max_sentences=config.data.max_sentences or None,
        skip_bad_audio=config.data.skip_bad_audio,
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
        worker_count=config.data.num_workers,
        **loader_args,
    )
    valid_loader = None
    if config.data.valid_subset:
        valid_split = load_split(data, config.data.valid_subset, encoder, **split_args)
        valid_loader = make_loader(
            data,
            valid_split,
            config.data.valid_subset,
            is_train=False,
            worker_count=config.data.num_workers,
            **loader_args,
        )
    for b in train_loader.buckets:
        logging.info(
            "train bucket: %d frames x %d utterances, targets %d",
            b.frames,
            b.batch_size,
            b.target_len,
        )
    if is_main:
        _save_run_files(config, workdir, model_config, data)

    # --- Model + optimiser -----------------------------------------------------------------------
    activations = None
    if num_shards > 1:  # batch-major activations stay batch-sharded; other dims free
        activations = NamedSharding(mesh, P(batch_spec[0], P.UNCONSTRAINED, P.UNCONSTRAINED))
    task = Task.from_config(
        config,
        model_config,
        _specaugment_policy(config, data, config.data.train_subset),
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
    ckpt = orbax_io.TrainCheckpointer(
        os.path.join(workdir, orbax_io.CHECKPOINT_DIR),
        keep_last=config.keep_last_checkpoints,
        keep_best=config.keep_best_checkpoints,
        best_metric=config.best_checkpoint_metric,
        best_mode="max" if config.maximize_best_checkpoint_metric else "min",
        async_save=config.async_checkpointing,
        cleanup_tmp=True,
    )
    seed = config.seed
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_sharding
    )
    restored = resilience.restore_latest_good(ckpt, target)
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
            params = _load_pretrained_encoder(
                config.load_pretrained_encoder_from, jax.device_get(state["params"])
            )
            state = {**state, "params": jax.device_put(params, state_sharding["params"])}
    held = sharding.bytes_per_device(state)
    logging.info("train state: %.1f MiB per device", max(held.values()) / 2**20)
    rng = jax.random.key(seed)

    def put(batch):
        return {
            k: jax.make_array_from_process_local_data(data_sharding, v) for k, v in batch.items()
        }

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
        in_shardings=(state_sharding["params"], data_sharding),
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
    def good_steps():
        return [s for s in ckpt.all_steps() if os.path.isdir(os.path.join(ckpt.directory, str(s)))]

    in_flight = {"step": None}  # the async save that may still be writing

    def wait_for_saves():
        try:
            ckpt.wait()
        except OSError as e:  # the background write failed: disk full, permissions, ...
            raise resilience.save_error(e, in_flight["step"], ckpt.directory, good_steps()) from e

    def save(step, metrics=None):
        wait_for_saves()
        in_flight["step"] = step
        meta = {
            "data": train_loader.get_state(),
            "seed": seed,
            "step": step,
            "fingerprint": resilience.fingerprint(state),
        }
        try:
            ckpt.save(step, state, meta, metrics)
        except OSError as e:
            raise resilience.save_error(e, step, ckpt.directory, good_steps()) from e

    # --- Evals -----------------------------------------------------------------------------------
    generate_fn = None
    if valid_loader is not None and config.wer.enabled:
        try:
            from s2t_jax.decoding.generation import make_generate_fn

            generate_fn = make_generate_fn(
                model_config, num_beams=1, max_length=config.wer.max_length
            )
        except ImportError:
            logging.warning("s2t_jax.decoding.generation is missing: validation WER is skipped")

    params_sharded = not all(s.is_fully_replicated for s in jax.tree.leaves(state_sharding))
    replicate = jax.jit(lambda p: p, out_shardings=replicated)

    def run_evals(step):
        if valid_loader is None:
            return None
        start = time.perf_counter()
        generate = generate_fn
        if generate_fn is not None and params_sharded:
            # Decoding is a loop of small steps: gather the weights once, not at every token.
            whole = replicate(state["params"]["model"])

            def generate(_, feats, mask):
                return generate_fn(whole, feats, mask)

        metrics = validation.evaluate(
            valid_loader,
            put,
            eval_step,
            state["params"],
            generate,
            encoder,
            config.wer.max_batches,
            local_rows=lambda ids: process_rows(ids, data_sharding),
            metric=config.wer.get("metric", "wer"),
            force_prefix=data.prepend_tgt_lang_tag,
        )
        metrics["seconds"] = time.perf_counter() - start
        writer.write(step, "valid", metrics)
        return metrics

    # --- Loop ------------------------------------------------------------------------------------
    writer = MetricWriter(workdir, enabled=is_main)
    writer.write(
        int(jax.device_get(state["step"])),
        "data",
        {
            f"{name}_skipped_{why}": n
            for name, split in (("train", train_split),)
            for why, n in split.skipped.items()
        }
        | {
            "train_utterances": len(train_split),
            "epoch_batches": train_loader.plan.batches_per_epoch,
        },
    )
    peak = flops.peak_flops(
        devices[0], model_config.dtype, config.peak_flops, measure_cpu=config.measure_cpu_peak
    )
    step = int(jax.device_get(state["step"]))
    pending, window = (
        [],
        {"flops": 0.0, "bad": 0, "start": time.perf_counter(), "updates": 0, "paused": 0.0},
    )
    last_valid, last_train, saved_at = None, None, step if ckpt.latest_step() == step else None
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
                skipped += _check_finite(fetched, where, config.nan_policy, train_split.ids)
                last_train = _log_train(
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
            skipped += _check_finite(
                jax.device_get(pending), where, config.nan_policy, train_split.ids
            )
        if saved_at != step:
            last_valid = run_evals(step)
            save(step, last_valid)
    finally:
        preemption.close()
        train_loader.close()
        writer.close()
        try:
            wait_for_saves()
        finally:
            try:
                ckpt.close()
            except OSError as e:  # the failed save, already reported by wait_for_saves
                logging.warning("closing the checkpoint manager: %s", e)
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


def _check_finite(fetched, where, policy: str, ids) -> int:
    """Reports non-finite micro-batches (their update and utterances); -> updates skipped.

    The step never applies such an update; "stop" makes it an error, "skip" a warning.
    """
    for m, (update, rows) in zip(fetched, where):
        if float(m["finite"]):
            continue
        names = [ids[i] for i in rows if i >= 0]
        if policy == "stop":
            raise resilience.non_finite_error(update, names, m)
        logging.warning(
            "update %d: non-finite loss or gradient (loss %s, grad_norm %s), skipped; "
            "utterances of the batch on process %d: %s",
            update,
            float(m["loss"]),
            float(m["grad_norm"]),
            jax.process_index(),
            ", ".join(names[:20]),
        )
    return int(sum(float(m["skipped"]) for m in fetched))


def _log_train(writer, step, fetched, window, peak, n_devices, loader) -> dict:
    """Aggregates the window's per-batch sums (fetched from device) and writes train metrics.

    Non-finite batches are left out of the sums (they are counted as skipped_updates)."""
    skipped = float(sum(m["skipped"] for m in fetched))
    fetched = [m for m in fetched if float(m["finite"])] or fetched
    sums = {k: float(sum(m[k] for m in fetched)) for k in SUM_KEYS if k in fetched[0]}
    updates = [m for m in fetched if float(m["updated"]) and not float(m["skipped"])]
    elapsed = max(time.perf_counter() - window["start"] - window["paused"], 1e-9)
    out = validation.summarize(sums)
    out.update(
        grad_norm=float(np.mean([m["grad_norm"] for m in updates])) if updates else 0.0,
        lr=float(fetched[-1]["lr"]),
        ntokens=sums["ntokens"] / max(len(updates), 1),
        nsentences=sums["nsentences"] / max(len(updates), 1),
        frames_per_s=sums["frames"] / elapsed,
        utt_per_s=sums["nsentences"] / elapsed,
        step_time=elapsed / max(window["updates"], 1),
        bad_audio=window["bad"],
        epoch=loader.epoch_of(),
        skipped_updates=skipped,
    )
    if peak:
        out["mfu"] = 100.0 * window["flops"] / elapsed / (peak * n_devices)
    writer.write(step, "train", out)
    window.update(flops=0.0, bad=0, start=time.perf_counter(), updates=0, paused=0.0)
    return out
