"""Mining writes the FlagEmbedding layout with ids and teacher scores, and training reads it back."""

import contextlib
import json

import pytest
import torch
from omegaconf import OmegaConf

from splade_peft.data.sources import load_collection
from splade_peft.data.hard_negatives import flagembedding_candidates, mining_record, mining_stats_path
from splade_peft.data.msmarco import MappedCorpus, load_msmarco, read_topics, read_trec_qrels
from splade_peft.training.teacher_scoring import splade_scores
from splade_peft.data.teachers import load_score_file
from splade_peft.errors import ConfigError, DataError
from splade_peft.mine import CPU_TRAINER, main, mining_trainer, parse_arguments
from tests.helpers import SHARED_DATA, offline_checkpoint

DOCUMENTS = {
    "d1": "Vitamin D deficiency is linked to bone loss in older adults.",
    "d2": "Bone density falls with age and vitamin intake matters.",
    "d3": "Protein folding is studied with molecular dynamics simulations.",
    "d4": "Older adults lose muscle mass without exercise.",
    "d5": "Molecular dynamics simulations of membrane proteins.",
}


@pytest.fixture
def beir_folder(tmp_path):
    folder = tmp_path / "tiny-beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in DOCUMENTS.items()))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "vitamin D and bone loss"}) + "\n"
                                          + json.dumps({"_id": "q2", "text": "protein simulations"}) + "\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    return folder


def test_self_mining_with_a_splade_teacher_writes_aligned_scores(beir_folder, tmp_path):
    checkpoint = offline_checkpoint("splade-2l")
    output = tmp_path / "mined.jsonl"
    main(["--beir", str(beir_folder), "--retriever", "splade", "--retriever-checkpoint", str(checkpoint),
          "--teacher", str(checkpoint), "--depth", "3", "--output", str(output)])
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["query_id"] for r in records] == ["q1", "q2"]
    collection = load_collection("beir", "train", path=str(beir_folder))
    expected = splade_scores(checkpoint, collection.queries, collection.corpus,
                             {r["query_id"]: r["pos_ids"] + r["neg_ids"] for r in records})
    for record in records:
        assert record["pos_ids"] not in record["neg_ids"] and 1 <= len(record["neg_ids"]) <= 3
        assert record["neg"] == [collection.corpus[d] for d in record["neg_ids"]]
        scored = dict(zip(record["pos_ids"] + record["neg_ids"], record["pos_scores"] + record["neg_scores"]))
        assert scored == pytest.approx(expected[record["query_id"]])
    candidates, teacher = flagembedding_candidates(output, collection, "error")
    assert load_score_file(output) == teacher and candidates["q1"] == tuple(records[0]["neg_ids"])


def test_percpos_filter_drops_what_the_miner_scores_near_the_positive_and_records_it(beir_folder, tmp_path):
    """q1's runner-up d2 shares most of its terms with the positive d1: a strict fraction of the positive's
    SPLADE score removes it (and more), and the stats file says how many were removed per query."""
    checkpoint = offline_checkpoint("splade-2l")
    plain, filtered = tmp_path / "plain.jsonl", tmp_path / "filtered.jsonl"
    common = ["--beir", str(beir_folder), "--retriever", "splade", "--retriever-checkpoint", str(checkpoint),
              "--depth", "4"]
    main(common + ["--output", str(plain)])
    main(common + ["--filter", "percpos", "--filter-value", "0.3", "--output", str(filtered)])
    negatives = {name: {r["query_id"]: r["neg_ids"] for r in map(json.loads, path.read_text().splitlines())}
                 for name, path in (("plain", plain), ("filtered", filtered))}
    stats = json.loads(mining_stats_path(filtered).read_text())
    assert stats["filter"] == {"method": "percpos", "value": 0.3}
    removed = stats["removed_per_query"]
    assert removed["total"] > 0 and removed["max"] <= removed["total"]
    assert removed["mean"] == pytest.approx(removed["total"] / 2)
    for query_id, kept in negatives["filtered"].items():
        assert set(kept) < set(negatives["plain"][query_id]) or len(kept) < len(negatives["plain"][query_id])
    assert json.loads(mining_stats_path(plain).read_text())["removed_per_query"]["total"] == 0


def test_a_training_split_reads_only_its_own_queries_lines_and_the_job_records_the_mining(beir_folder, tmp_path):
    """A file mined over the whole training split also has lines for the queries a dev split carves out: the
    training collection without them never reads those lines. The mining stats travel with the file."""
    import dataclasses

    output = tmp_path / "mined.jsonl"
    main(["--beir", str(beir_folder), "--depth", "2", "--output", str(output)])
    collection = load_collection("beir", "train", path=str(beir_folder))
    training = dataclasses.replace(collection, queries={"q1": collection.queries["q1"]},
                                   qrels={"q1": collection.qrels["q1"]})
    candidates, _ = flagembedding_candidates(output, training, "error")
    assert set(candidates) == {"q1"}
    recorded = mining_record(output)
    assert recorded["file"] == str(output) and recorded["retriever"] == "bm25" and recorded["queries"] == 2
    assert mining_record(tmp_path / "mined-elsewhere.jsonl") is None


@pytest.fixture
def gpu_job(tmp_path):
    """A run folder as a bf16 training job on the second GPU leaves it (its adapter/ and saved config)."""
    folder = tmp_path / "gpu-job"
    (folder / "adapter").mkdir(parents=True)
    (folder / ".hydra").mkdir()
    trainer = {"accelerator": "gpu", "devices": [1], "precision": "bf16-mixed", "max_steps": 2000}
    OmegaConf.save(OmegaConf.create({"trainer": trainer}), folder / ".hydra" / "config.yaml")
    return folder


def test_mining_with_a_job_runs_where_it_trained_unless_told_otherwise(gpu_job, beir_folder, tmp_path):
    assert mining_trainer(str(gpu_job)) == {"accelerator": "gpu", "devices": [1], "precision": "bf16-mixed"}
    assert mining_trainer(str(gpu_job / "adapter"), accelerator="cpu") == {"accelerator": "cpu", "devices": [1],
                                                                           "precision": "bf16-mixed"}
    assert mining_trainer(None) == CPU_TRAINER
    assert mining_trainer(None, accelerator="gpu", devices="1,", precision="bf16-mixed") == {
        "accelerator": "gpu", "devices": "1,", "precision": "bf16-mixed"}
    command = ["--beir", str(beir_folder), "--retriever", "adapter", "--adapter", str(gpu_job), "--output",
               str(tmp_path / "mined.jsonl")]
    assert parse_arguments([*command, "--accelerator", "cpu", "--precision", "32-true"]).trainer == {
        "accelerator": "cpu", "devices": [1], "precision": "32-true"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="shows the refusal where no GPU is visible")
def test_mining_where_the_jobs_gpu_is_missing_is_refused_before_reading_any_data(gpu_job, tmp_path, capsys):
    missing = tmp_path / "no-such-collection"
    with pytest.raises(SystemExit):
        parse_arguments(["--beir", str(missing), "--retriever", "adapter", "--adapter", str(gpu_job), "--output",
                         str(tmp_path / "mined.jsonl")])
    assert ("config key '--accelerator': is gpu and no CUDA device is visible here -- use --accelerator cpu"
            in capsys.readouterr().err)


def test_every_encoder_of_a_mining_run_is_on_the_mining_device_and_precision(beir_folder, tmp_path, monkeypatch):
    """The splade retriever and the teacher both run under the trainer section the options give (before, the
    retriever never left the CPU and the teacher was given no section)."""
    import splade_peft.miners
    import splade_peft.training.teacher_scoring
    from splade_peft.device import on_job_device

    placed = []

    @contextlib.contextmanager
    def recorded(module, trainer_cfg, *arguments):
        placed.append((type(module).__name__, OmegaConf.to_container(OmegaConf.create(trainer_cfg))))
        with on_job_device(module, trainer_cfg, *arguments) as device:
            yield device

    monkeypatch.setattr(splade_peft.miners, "on_job_device", recorded)
    monkeypatch.setattr(splade_peft.training.teacher_scoring, "on_job_device", recorded)
    checkpoint = offline_checkpoint("splade-2l")
    output = tmp_path / "mined.jsonl"
    main(["--beir", str(beir_folder), "--retriever", "splade", "--retriever-checkpoint", str(checkpoint),
          "--teacher", str(checkpoint), "--depth", "2", "--precision", "bf16-mixed", "--output", str(output)])
    expected = {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed"}
    assert placed == [("SpladeEncoder", expected)] * 2
    assert json.loads(mining_stats_path(output).read_text())["trainer"] == expected


def test_the_filter_must_come_with_a_value(beir_folder, tmp_path):
    with pytest.raises(SystemExit):
        main(["--beir", str(beir_folder), "--filter", "percpos", "--output", str(tmp_path / "x.jsonl")])


def test_trec_dl_topics_and_qrels_read_from_the_samples():
    samples = SHARED_DATA / "samples" / "trec-dl-passage"
    if not samples.is_dir():
        pytest.skip("shared samples not present")
    topics = read_topics(samples / "topics.dl19-passage.txt")
    qrels = read_trec_qrels(samples / "qrels.dl19-passage.txt")
    assert topics["156493"] == "do goldfish grow" and qrels["19335"]["1017759"] == 0
    assert set(read_trec_qrels(samples / "qrels.dl20-passage.txt")) <= set(read_topics(samples / "topics.dl20.txt"))


def test_msmarco_collection_is_memory_mapped_and_checked(tmp_path):
    (tmp_path / "collection.tsv").write_text("10\tfirst passage\n2\tsecond passage\n")
    (tmp_path / "topics.tsv").write_text("7\ta question\n")
    (tmp_path / "qrels.txt").write_text("7 0 2 1\n")
    corpus = MappedCorpus(tmp_path / "collection.tsv")
    assert corpus["2"] == "second passage" and "3" not in corpus and sorted(corpus) == ["10", "2"]
    collection = load_msmarco(tmp_path / "collection.tsv", tmp_path / "topics.tsv", tmp_path / "qrels.txt", "m", "dev")
    assert collection.queries == {"7": "a question"} and collection.qrels == {"7": {"2": 1}}
    (tmp_path / "qrels.txt").write_text("7 0 99 1\n")
    with pytest.raises(DataError, match="passage id '99'"):
        load_msmarco(tmp_path / "collection.tsv", tmp_path / "topics.tsv", tmp_path / "qrels.txt", "m", "dev")


@pytest.fixture
def msmarco_folder(tmp_path):
    """The TREC DL / MS MARCO dev sample topics and qrels beside a collection.tsv holding every judged passage."""
    samples = SHARED_DATA / "samples" / "trec-dl-passage"
    if not samples.is_dir():
        pytest.skip(f"{samples} not found: the shared samples live in ../shared/data beside the repo")
    for sample in samples.iterdir():
        (tmp_path / sample.name).symlink_to(sample)
    passages = sorted({pid for sample in samples.glob("qrels.*") for grades in read_trec_qrels(sample).values()
                       for pid in grades})
    (tmp_path / "collection.tsv").write_text("".join(f"{pid}\tpassage {pid}\n" for pid in passages))
    return tmp_path


def test_msmarco_folder_gives_dev_and_trec_dl_splits_with_the_track_relevance_grade(msmarco_folder):
    dev = load_collection("msmarco", "dev", path=str(msmarco_folder))
    dl19 = load_collection("msmarco", "dl19", path=str(msmarco_folder))
    dl20 = load_collection("msmarco", "dl20", path=str(msmarco_folder))
    assert (dev.min_relevant_grade, dl19.min_relevant_grade, dl20.min_relevant_grade) == (1, 2, 2)
    assert len(dl19.queries) == 43 and len(dl20.queries) == 54 and dl19.queries["19335"].startswith("anthropological")
    assert len(dev.queries) == len(dev.qrels) == 6980


def test_trec_dl_mrr_counts_only_grades_from_two(msmarco_folder):
    from splade_peft.evaluation.metrics import evaluate

    dl19 = load_collection("msmarco", "dl19", path=str(msmarco_folder))
    query_id = "19335"
    by_grade = {grade: [pid for pid, g in dl19.qrels[query_id].items() if g == grade] for grade in (1, 2)}
    run = {query_id: [(by_grade[1][0], 2.0), (by_grade[2][0], 1.0)]}  # a "related" passage above a relevant one
    qrels = {query_id: dl19.qrels[query_id]}
    assert evaluate(qrels, run, min_relevant_grade=dl19.min_relevant_grade)["mrr@10"] == 0.5
    assert evaluate(qrels, run)["mrr@10"] == 1.0


def test_msmarco_folder_names_missing_files_and_unknown_splits(msmarco_folder):
    (msmarco_folder / "qrels.dl20-passage.txt").unlink()
    with pytest.raises(DataError, match=r"qrels.dl20-passage.txt: missing -- put collection.tsv"):
        load_collection("msmarco", "dl20", path=str(msmarco_folder))
    with pytest.raises(ConfigError, match="unknown MS MARCO split 'dl21'.*train, dev, dl19, dl20"):
        load_collection("msmarco", "dl21", path=str(msmarco_folder))


def smoke_run(folder, *overrides):
    """A tiny training job's run folder (adapter/ and .hydra/config.yaml), ~30 s on a CPU."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "splade_peft", "experiment=smoke", "logger=csv", "eval.zero_shot=false",
                    f"hydra.run.dir={folder}", *overrides], check=True, capture_output=True)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("family", [[], ["model=tiny_llama", "encoder=dense", "index=faiss"]], ids=["splade", "dense"])
def test_a_jobs_adapter_mines_as_its_evaluation_loads_it(family, beir_folder, tmp_path):
    """Train, then mine with the result: one command each. The miner is the job's encoder (saved adapter on the
    configured backbone), and each positive gets the score that encoder gives it."""
    from splade_peft.miners import adapter_ranking

    run_dir = smoke_run(tmp_path / "job", *family)
    output = tmp_path / "self-mined.jsonl"
    main(["--beir", str(beir_folder), "--retriever", "adapter", "--adapter", str(run_dir), "--depth", "3",
          "--filter", "margin_pos", "--filter-value", "0", "--output", str(output)])
    stats = json.loads(mining_stats_path(output).read_text())
    assert stats["retriever"] == "adapter" and stats["retriever_source"] == str(run_dir)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert all(set(r["pos_ids"]).isdisjoint(r["neg_ids"]) for r in records)
    collection = load_collection("beir", "train", path=str(beir_folder))
    ranking = adapter_ranking(run_dir / "adapter", collection, 5, ".cache", OmegaConf.create(CPU_TRAINER))
    for query_id, positives in ranking.positive_scores.items():
        retrieved = dict(ranking.run[query_id])
        assert all(score == pytest.approx(retrieved[d]) for d, score in positives.items() if d in retrieved)
        # margin 0: nothing scored above the positive survives as a negative
        kept = next((r["neg_ids"] for r in records if r["query_id"] == query_id), [])
        assert all(retrieved.get(d, float("-inf")) <= min(positives.values()) for d in kept)


def test_the_job_table_says_what_the_mining_filter_removed():
    from splade_peft.results import JobResult
    from splade_peft.summary import format_table

    mining = {"file": "mined.jsonl", "retriever": "adapter", "filter": {"method": "percpos", "value": 0.95},
              "removed_per_query": {"mean": 21.83, "max": 155, "total": 17664}, "queries_without_negatives": 77}
    table = format_table(JobResult.from_payload({"status": "completed", "negatives_mining": mining}))
    assert ("negatives: mined.jsonl, mined by adapter; percpos 0.95 removed 21.8 candidates per query (max 155), "
            "77 queries left without negatives") in table
