"""The mmsearch command end to end, as a user runs it (subprocess, real entry point)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_video, RED, BLUE


def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", "from mmsearch.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


@pytest.mark.slow
def test_index_then_query_by_frame_json(video_corpus, random_clip_checkpoint, tmp_path):
    from PIL import Image

    from mmsearch.media import frame_at

    index_dir = tmp_path / "idx"
    env = {"MMSEARCH_INDEX": str(index_dir)}  # no --index flags: the environment variable decides
    out = run("index", str(video_corpus["root"]), "--model", "synth-clip", "--pretrained", str(random_clip_checkpoint), "--device", "cpu", env=env)
    assert "indexed 4" in out.stdout and "failed 0" in out.stdout
    t, frame = frame_at(video_corpus["root"] / "b.mp4", 6.0)
    Image.fromarray(frame).save(tmp_path / "frame.png")
    out = run("query", "--image", str(tmp_path / "frame.png"), "--json", "-k", "3", env=env)
    payload = json.loads(out.stdout)  # exactly one JSON object on stdout
    assert set(payload) == {"query", "results"}
    relative = os.path.relpath(index_dir)  # the index given as a relative path is reported absolute
    again_json = json.loads(run("query", "--image", str(tmp_path / "frame.png"), "--json", "-k", "3", "--index", relative).stdout)
    assert again_json["query"]["index"] == os.path.abspath(index_dir) and again_json["results"] == payload["results"]
    top = payload["results"][0]
    assert set(top) == {"path", "start", "end", "score", "video_score", "modality", "moment_score", "text", "media_id", "tags", "caption",
                        "match_score"}
    assert top["match_score"] is None  # the matcher's probability comes with --rerank only
    assert top["tags"] is None  # sound tags come with sound results of an index that has them
    assert top["caption"] is None  # captions come with results of an index that has them
    assert top["path"] == str(video_corpus["root"] / "b.mp4") and os.path.isabs(top["path"])
    assert top["start"] <= 6.0 <= top["end"] and top["modality"] == "video"
    # a readable table without --json, and info
    table = run("query", "a red circle", env=env).stdout
    answer = json.loads(run("query", "a red circle", "--json", env=env).stdout)["results"]
    rows = [line for line in table.splitlines() if re.match(r"^\W*\d+\W", line) and "│" in line]
    assert len(rows) == len(answer) >= 2  # one row per moment of the engine's answer, in its order
    for i, (row, hit) in enumerate(zip(rows, answer), 1):
        cells = [c.strip() for c in row.strip().strip("│").split("│")]
        assert cells[0] == str(i) and cells[1] == hit["path"] and f"{hit['score']:.3f}" in cells
    info = run("info", "--json", env=env)
    assert json.loads(info.stdout)["media"] == {"video": 3, "image": 1}
    # a reader that goes away (`| head -1`) stops the command quietly with 141, as SIGPIPE does, not 1 (a failure)
    for args in (["info"], ["query", "a red circle", "--json"], ["query", "--help"]):  # our rich console; JSON; typer's help
        proc = subprocess.Popen([sys.executable, "-c", "from mmsearch.cli import main; main()", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
        proc.stdout.close()  # before the command (seconds to start) writes anything
        assert proc.wait(timeout=300) == 141 and proc.stderr.read() == b"", args
        proc.stderr.close()
    # nothing changed: nothing indexed again
    again = run("index", str(video_corpus["root"]), env=env)
    assert "indexed 0, unchanged 4" in again.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["index", "/definitely/missing"], "no such file or directory"),
        (["query", "x", "--index", "/definitely/missing-index"], "no mmsearch index"),
        (["query"], "give a query text"),
        (["query", "  ", "--index", "{index}"], "empty query"),
        (["index", "{empty}", "--index", "{tmp}/i", "--model", "synth-clip"], "no media files"),
        (["index", "{video}", "--index", "{tmp}/j", "--model", "ViT-B-32"], "--pretrained"),
        (["index", "{video}", "--index", "{tmp}/k", "--model", "no-such-model"], "does not know a model"),
    ],
)
def test_user_errors_are_one_clear_message(args, needle, tmp_path, video_corpus, random_clip_checkpoint):
    (tmp_path / "empty").mkdir()
    video = tmp_path / "v.mp4"
    write_video(video, [(RED, 1.0), (BLUE, 1.0)])
    index_dir = tmp_path / "built"
    if "{index}" in args:
        run("index", str(video), "--index", str(index_dir), "--model", "synth-clip", "--pretrained", str(random_clip_checkpoint), "--no-audio")
    fmt = {"index": str(index_dir), "empty": str(tmp_path / "empty"), "tmp": str(tmp_path), "video": str(video)}
    proc = run(*[a.format(**fmt) for a in args], check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr
    if needle == "does not know a model":  # a name of the wrong kind is a usage error
        assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr


def test_index_reports_one_whole_line_per_file_when_piped(tmp_path, random_clip_checkpoint):
    """Piped output is 80 columns wide: what the index says of a file (skipped, and why) and its summary
    stay one line each, however long the path, so grep and a log keep them whole."""
    media = tmp_path / ("a folder with a name long enough to pass eighty columns" + "-" * 20)
    media.mkdir()
    write_video(media / "fine.mp4", [(RED, 1.0)])
    bad = media / "a recording that was cut off while copying.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    index = tmp_path / "index"
    proc = run("index", str(media), "--index", str(index), "--model", "synth-clip", "--pretrained", str(random_clip_checkpoint),
               "--no-audio", "--no-speech", "--no-ocr", "--device", "cpu", env={"COLUMNS": "80"})
    [skipped] = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    assert skipped.startswith(f"skipped {bad}: decode failed: ") and len(skipped) > 80, proc.stderr
    [summary] = [line for line in proc.stdout.splitlines() if line.startswith("indexed ")]
    assert "indexed 1," in summary and "failed 1" in summary and summary.endswith(f"-> {index} (generation 1)"), proc.stdout
    listed = run("info", "--index", str(index), "--failures", env={"COLUMNS": "80"}).stdout
    assert f"  failed {bad}: decode: " in listed and "no file failed" not in listed, listed
    table = run("query", "a red square", "--index", str(index), "-k", "1", env={"COLUMNS": ""}).stdout  # piped, no width set
    assert any(str(media / "fine.mp4") in line and "0:00.00" in line for line in table.splitlines()), table
    bad.unlink()  # gone from the folder: its failure is dropped at the next run, and the listing says there is none
    run("index", str(media), "--index", str(index), "--no-audio", "--no-speech", "--no-ocr", "--device", "cpu")
    assert "no file failed or was damaged" in run("info", "--index", str(index), "--failures").stdout


def test_no_results_say_which_words_were_not_found(capsys):
    """A quoted phrase nothing holds: the table's line says what was looked for (said, shown, or either)."""
    import mmsearch.cli as cli

    for modality, verb in (("speech", "says"), ("text", "shows"), ("default", "says or shows")):
        cli._print_results({"results": [], "query": {"modality": modality}}, text='"a purple elephant"', image=None, audio=None)
        assert f"no results: nothing {verb} the quoted words" in capsys.readouterr().out


@pytest.mark.slow
def test_query_batch_answers_each_query_like_a_single_query(tmp_path):
    """`query --batch`: one JSON line per query, in input order, the same answers as one query at a time."""
    from mmsearch.synth import SynthConfig, generate_corpus

    rows = generate_corpus(tmp_path / "corpus", videos=4, audio=0, seed=4321,
                           config=SynthConfig(max_size=(320, 240), audio_in_video_probability=0.0))
    index_dir = tmp_path / "idx"
    run("index", str(tmp_path / "corpus"), "--index", str(index_dir), "--model", "synth-clip", "--device", "cpu", "--no-audio")
    captions = sorted({r["caption"] for r in rows if r["modality"] == "video"})[:3] + ["a white square"]
    lines = tmp_path / "queries.txt"
    lines.write_text("\n".join(captions) + "\n\n", encoding="utf-8")  # blank lines are skipped
    as_list = tmp_path / "queries.json"
    as_list.write_text(json.dumps(captions), encoding="utf-8")
    outputs = []
    for batch in (lines, as_list):
        out = run("query", "--batch", str(batch), "--index", str(index_dir), "-k", "3", "--device", "cpu")
        answers = [json.loads(line) for line in out.stdout.splitlines()]
        assert [a["query"]["text"] for a in answers] == captions
        assert all(a["query"]["index"] == str(index_dir) and a["query"]["modality"] == "default" for a in answers)  # as query --json
        outputs.append(answers)
    assert outputs[0] == outputs[1]
    piped = subprocess.run([sys.executable, "-c", "from mmsearch.cli import main; main()", "query", "--batch", "-", "--index",
                            str(index_dir), "-k", "3", "--device", "cpu"], input=lines.read_text(), capture_output=True, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert [json.loads(line) for line in piped.stdout.splitlines()] == outputs[0], piped.stderr  # - : standard input
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(captions)[:-1], encoding="utf-8")  # a JSON list without its closing bracket
    refused = run("query", "--batch", str(broken), "--index", str(index_dir), check=False)
    assert refused.returncode == 2 and "broken.json: not a valid JSON list" in refused.stderr and not refused.stdout, refused.stderr
    both = run("query", "red", "--batch", str(lines), "--index", str(index_dir), check=False)
    assert both.returncode == 2 and "not both" in both.stderr, both.stderr
    import mmsearch

    idx = mmsearch.open_index(index_dir, device="cpu")  # the engine behind `mmsearch query TEXT`, one query at a time
    for caption, answer in zip(captions, outputs[0]):
        single = [r.to_dict() for r in idx.search(caption, k=3)]
        assert [(r["path"], r["start"], r["end"]) for r in answer["results"]] == [(r["path"], r["start"], r["end"]) for r in single]
        assert all(r["score"] == pytest.approx(s["score"], abs=1e-5) for r, s in zip(answer["results"], single))
    # each caption shown in the corpus: its top moment is that shape's event (a file showing it is not enough)
    from mmsearch.evaluation import best_event

    present = [c for c in captions if any(r["caption"] == c for r in rows)]
    assert present
    for caption in present:
        top = outputs[0][captions.index(caption)]["results"][0]
        assert best_event(top["path"], top["start"], top["end"], caption, rows, modality="video")[1] >= 0.5, (caption, top)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    bad = run("query", "--batch", str(empty), "--index", str(index_dir), check=False)
    assert bad.returncode != 0 and "no queries" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr


def test_synth_paired_writes_videos_whose_sound_follows_the_shape(tmp_path):
    """`mmsearch synth --paired N`: every video's soundtrack plays the paired sound while its shape is on screen."""
    from mmsearch.synth import load_ground_truth

    run("synth", str(tmp_path / "c"), "--videos", "2", "--paired", "3", "--seed", "5", "--max-width", "320", "--max-height", "240")
    rows = load_ground_truth(tmp_path / "c")
    visual = [r for r in rows if r["modality"] == "video"]
    sound = {(r["file"], r["start"], r["end"]): r["caption"] for r in rows if r["modality"] != "video"}
    assert len({r["file"] for r in visual}) == 2
    pairs = {r["caption"]: sound.get((r["file"], r["start"], r["end"])) for r in visual}
    assert all(pairs.values()) and len(set(pairs)) == len(set(pairs.values()))  # one sound per shape, one-to-one


def test_usage_errors_and_interrupts_are_one_line_with_the_right_exit_code(tmp_path, monkeypatch, capsys):
    """Typer raises usage errors from the click it bundles and returns 130 on Ctrl-C in non-standalone
    mode: main() must still print one line (no traceback) and exit non-zero."""

    import mmsearch.cli as cli

    exe = str(Path(sys.executable).parent / "mmsearch")
    a_file = tmp_path / "not-a-folder.mp4"
    a_file.write_bytes(b"x")
    (tmp_path / "blocked" / "data").parent.mkdir()
    (tmp_path / "blocked" / "data").write_bytes(b"x")  # a file where the index keeps its folder of data
    for args, code, needle in (
        (["query", "x", "--no-such-option"], 2, ""), (["nosuchcommand"], 2, ""), (["remove"], 2, ""),
        (["train-space", "--index", str(tmp_path), "--epochs", "0"], 2, "--epochs"),
        (["train-space", "--index", str(tmp_path), "--dim", "-1"], 2, "--dim"),
        (["synth", str(a_file), "--videos", "1"], 2, f"{a_file} is a file"),
        (["demo", str(a_file), "--quick"], 2, f"{a_file / 'media'} (Not a directory)"),
        (["index", str(tmp_path / "empty"), "--index", str(tmp_path / "blocked")], 2, f"{tmp_path / 'blocked' / 'data'} (File exists)"),
        (["index", str(tmp_path / "empty"), "--index", str(tmp_path / "i"), "--no-speech", "--asr-model", "small"], 2, "--asr-model is for"),
        (["index", str(tmp_path / "empty"), "--index", str(tmp_path / "i"), "--no-audio", "--audio-model", "music"], 2, "--no-audio turns"),
        (["index", str(tmp_path / "empty"), "--index", str(tmp_path / "i"), "--commit-every", "-1"], 2, "--commit-every must be"),
        (["query", "x", "--index", str(a_file)], 2, f"{a_file} is a file, not an mmsearch index directory"),  # a path of the wrong kind
        (["info", "--index", str(a_file)], 2, f"{a_file} is a file, not an mmsearch index directory"),
        (["query", "x", "--index", str(tmp_path), "--audio-weight", "0.3"], 2, "--audio-weight weighs the sound against the other spaces of --modality all"),
        (["query", "x", "--index", str(tmp_path), "--modality", "all", "--audio-weight", "1.5"], 2, "--audio-weight must be between 0 and 1, got 1.5"),
    ):
        (tmp_path / "empty").mkdir(exist_ok=True)
        (tmp_path / "empty" / "a.png").write_bytes(b"x")
        proc = subprocess.run([exe, *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == code and "Traceback" not in proc.stderr and needle in proc.stderr, (args, proc.stderr)
    for args in (["index", str(tmp_path), "--index", str(a_file)], ["query", "x", "--index", str(a_file)], ["index", str(tmp_path), "--index", ""]):
        proc = subprocess.run([exe, *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and "error:" in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    monkeypatch.setattr(cli, "app", lambda **kw: 130)  # what typer returns for Ctrl-C without standalone mode
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 130 and "interrupted" in capsys.readouterr().err

    def terminated(**kw):  # `kill PID` while a command runs: stopped as by Ctrl-C, exit 128 + SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "app", terminated)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 143 and "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before  # the handler was the command's only


@pytest.mark.slow  # two whole `mmsearch index` processes that load models (about 10 s)
def test_exit_status_tells_a_usage_error_from_a_failure(tmp_path):
    """As the README's "Exit status" says: 2 for a name of the wrong kind, 1 for weights that cannot be
    loaded; one line on stderr either way, and no index is started."""
    (tmp_path / "media").mkdir()
    wrong_kind = run("index", str(tmp_path / "media"), "--index", str(tmp_path / "i"), "--model", "synth-clip",
                     "--captions", "synth-itm", check=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "blip"}')
    (broken / "model.safetensors").write_bytes(b"not weights")
    unloadable = run("index", str(tmp_path / "media"), "--index", str(tmp_path / "i"), "--model", "synth-clip",
                     "--captions", str(broken), check=False)
    assert wrong_kind.returncode == 2 and "pass it with --rerank-model" in wrong_kind.stderr, wrong_kind.stderr
    assert unloadable.returncode == 1 and "could not load the BLIP captioning model" in unloadable.stderr, unloadable.stderr
    for proc in (wrong_kind, unloadable):
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "i").exists()


@pytest.mark.slow  # four whole mmsearch processes (about 13 s)
def test_a_result_whose_file_is_gone_since_indexing_says_so(tmp_path):
    """A file deleted after indexing is still in the index until the next run: a query that returns it
    says so in one line on stderr (stdout stays one JSON object), and says nothing while every file is there."""
    root = tmp_path / "media"
    write_video(root / "red.mp4", [(RED, 3.0)])
    write_video(root / "blue.mp4", [(BLUE, 3.0)])
    env = {"MMSEARCH_INDEX": str(tmp_path / "idx")}
    run("index", str(root), "--model", "synth-clip", "--device", "cpu", "--no-speech", "--no-ocr", "--no-audio", "-q", env=env)
    before = run("query", "a red square", "--json", "-k", "2", env=env)
    assert "gone since indexing" not in before.stderr
    (root / "red.mp4").unlink()
    after = run("query", "a red square", "--json", "-k", "2", env=env)
    assert [Path(r["path"]).name for r in json.loads(after.stdout)["results"]] == ["red.mp4", "blue.mp4"]
    [line] = [x for x in after.stderr.splitlines() if "gone since indexing" in x]
    assert str(root / "red.mp4") in line and "blue.mp4" not in line and "mmsearch index" in line
    table = run("query", "a red square", "-k", "2", env=env)
    assert "gone since indexing" in table.stderr and "red.mp4 (gone)" in table.stdout and "blue.mp4 (gone)" not in table.stdout


@pytest.mark.slow  # four whole `mmsearch index` processes (about 20 s)
@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="needs POSIX file size limits (RLIMIT_FSIZE)")
def test_a_disk_that_refuses_the_commit_is_one_line_and_the_next_run_goes_on(tmp_path):
    """Disk full, quota, a read-only disk or a file size limit at commit: one line naming the file and what
    to do, exit 1, the last generation intact and verified, no temporary file left; the same command run
    again (the disk fixed) indexes what was left. The refusal is real: ``ulimit -f`` (RLIMIT_FSIZE), the
    same OSError path as ENOSPC, without needing a small file system mounted."""
    import resource
    import signal

    from PIL import Image

    from mmsearch.api import open_index, verify_index

    media, index_dir = tmp_path / "media", tmp_path / "idx"
    media.mkdir()

    def picture(name: str, seed: int) -> None:
        pixels = (np.random.default_rng(seed).random((64, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(media / name)

    for i in range(3):
        picture(f"a{i}.png", i)
    run("index", str(media), "--index", str(index_dir), "--model", "synth-clip")
    picture("new.png", 9)

    def one_byte_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))

    proc = subprocess.run(
        [sys.executable, "-c", "from mmsearch.cli import main; main()", "index", str(media), "--index", str(index_dir),
         "--model", "synth-clip"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"},
        preexec_fn=one_byte_files, timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(r"cannot write \S*idx/data/\S+: File too large\. The index keeps its last complete generation: "
                     r"lift the file size limit \(ulimit -f\), then run the same command again", lines[0]), lines[0]
    verify_index(index_dir)
    assert sorted(Path(p).name for p in open_index(index_dir).media_ids()) == ["a0.png", "a1.png", "a2.png"]
    # a writer that cannot even take the index's lock (a read-only disk; here the lock file is a folder)
    (index_dir / ".lock").unlink()
    (index_dir / ".lock").mkdir()
    locked = run("index", str(media), "--index", str(index_dir), "--model", "synth-clip", check=False)
    assert locked.returncode == 1 and len(locked.stderr.strip().splitlines()) == 1, locked.stderr
    assert re.search(r"cannot write \S*idx/\.lock: Is a directory\. The index keeps its last complete", locked.stderr)
    (index_dir / ".lock").rmdir()
    out = run("index", str(media), "--index", str(index_dir), "--model", "synth-clip")
    assert "indexed 1" in out.stdout, out.stdout
    assert not [p for p in index_dir.rglob("*") if p.name.startswith(".tmp")]
    verify_index(index_dir)
    assert sorted(Path(p).name for p in open_index(index_dir).media_ids()) == ["a0.png", "a1.png", "a2.png", "new.png"]
