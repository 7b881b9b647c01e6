"""hypotheses.tsv survives a run killed mid-write; run.json refuses to mix runs."""

import json

from s2t_jax.evaluation import outputs


def test_read_hypotheses_cuts_a_torn_line(tmp_path):
    path = tmp_path / outputs.HYPOTHESES_FILE
    writer = outputs.HypothesisWriter(str(path))
    writer.append([{"id": "a", "reference": "x\ty", "hypothesis": "z", "seconds": "1.0"}])
    writer.close()
    with open(path, "a") as f:
        f.write("b\tpartial")
    rows = outputs.read_hypotheses(str(path), repair=True)
    assert [r["id"] for r in rows] == ["a"] and rows[0]["reference"] == "x y"
    assert path.read_text().endswith("1.0\n")


def test_prepare_output_resumes_only_the_same_run(tmp_path):
    row = {"id": "a", "reference": "r", "hypothesis": "h", "seconds": "1.0"}
    assert outputs.prepare_output(str(tmp_path), {"k": 1}, overwrite=False) == (set(), "")
    writer = outputs.HypothesisWriter(str(tmp_path / outputs.HYPOTHESES_FILE))
    writer.append([row])
    writer.close()
    assert outputs.prepare_output(str(tmp_path), {"k": 1}, overwrite=False) == ({"a"}, "")
    done, error = outputs.prepare_output(str(tmp_path), {"k": 2}, overwrite=False)
    assert done == set() and "differs in ['k']" in error
    assert json.loads((tmp_path / outputs.RUN_FILE).read_text()) == {"k": 1}
    assert outputs.prepare_output(str(tmp_path), {"k": 2}, overwrite=True) == (set(), "")
    assert not (tmp_path / outputs.HYPOTHESES_FILE).exists()
