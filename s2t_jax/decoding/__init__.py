"""Features to token ids.

settings (what a search does, resolved once) -> processors (transformers' logits masks) ->
greedy / beam_search (the loops) -> search (compiled searches, `make_generate_fn`) ->
placement (devices) and groups (length groups) -> generation (`generate`, the user call).
buckets pads shapes; sharded and transcribe serve evaluation and the command line.
"""
