"""Command-line interface: list datasets and methods, sample episodes, train, evaluate."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from metanlp.data.errors import DataError
from metanlp.data.types import TextDataset
from metanlp.engine.config import ConfigError, RunConfig
from metanlp.methods.options import OptionError

USER_ERRORS = (DataError, ConfigError, OptionError)
MAX_CONCURRENT_HINT = "set METANLP_MAX_CONCURRENT to change it"


def user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message is the whole story for a user: one line, exit code 2, no traceback."""
    from metanlp.encoders.embedding_file import EmbeddingFileError
    from metanlp.engine.checkpoint import CheckpointError
    from metanlp.runs import InvalidRunId, RunNotFound
    from metanlp.runs.store import StoreError

    return (*USER_ERRORS, InvalidRunId, RunNotFound, StoreError, CheckpointError, EmbeddingFileError)


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` → (key, value), the value parsed as JSON when it can be (numbers, booleans)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def parse_splits(text: str) -> tuple[str, tuple[str, ...]]:
    """``fewrel=01,02`` → ("fewrel", ("01", "02")); ``fewrel=default`` → ("fewrel", ())."""
    dataset, separator, ids = text.partition("=")
    if not separator or not dataset.strip() or not ids.strip():
        raise argparse.ArgumentTypeError(f"expected DATASET=IDS (e.g. fewrel=all), got {text!r}")
    chosen = tuple(item.strip() for item in ids.split(",") if item.strip())
    return dataset.strip(), () if chosen == ("default",) else chosen


DEFAULT = " (default: %(default)s)"
EVAL_SEED_HELP = (
    "seed of the test episodes, the same for every method and training seed, so results pair up; "
    "'episodes --split test' with the same seed writes these very episodes" + DEFAULT
)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="clinc150", help="built-in dataset name (see 'datasets')" + DEFAULT)
    parser.add_argument(
        "--data-file", help="your CSV, TSV or JSONL file (a text and a label column); replaces --dataset. A file "
        "with too few classes for disjoint N-way class splits shares its classes and splits their examples: "
        "the split chosen is printed",
    )
    parser.add_argument("--text-column", default="text", help="the text column of --data-file" + DEFAULT)
    parser.add_argument("--label-column", default="label", help="the label column of --data-file" + DEFAULT)
    parser.add_argument("--split-id", help="published class split to use, where a dataset has several")
    parser.add_argument("--n-way", type=int, default=5, help="classes per episode (N)" + DEFAULT)
    parser.add_argument("--k-shot", type=int, default=1, help="support examples per class (K)" + DEFAULT)
    parser.add_argument("--n-query", type=int, default=5, help="query examples per class" + DEFAULT)


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="protonet", help="registered method name (see 'methods')" + DEFAULT)
    parser.add_argument(
        "--encoder", default="minilm", choices=["minilm", "scratch"],
        help="pretrained MiniLM (frozen unless a method option says otherwise) or a from-scratch Transformer"
        + DEFAULT,
    )
    parser.add_argument(
        "--encoder-option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
        help="encoder setting, e.g. num_layers=2 or checkpoint=PATH (repeatable)",
    )
    parser.add_argument(
        "--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
        help="method option, e.g. distance=cosine or finetune=top (repeatable)",
    )
    parser.add_argument(
        "--seed", type=int, default=0,
        help="training seed: initial weights and the meta-training episodes; not the test episodes (--eval-seed)"
        + DEFAULT,
    )
    parser.add_argument("--eval-seed", type=int, default=RunConfig.eval_seed, help=EVAL_SEED_HELP)
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps" + DEFAULT)
    parser.add_argument(
        "--episodes", type=int, default=600, help="test episodes on meta-test classes (95%% CI over them)" + DEFAULT
    )
    parser.add_argument(
        "--episodes-file", help="fixed test episodes written by 'episodes' (replaces --episodes and --eval-seed)"
    )
    parser.add_argument("--output", help="write the results as JSON to this file, with each test episode's accuracy")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser(with_studies: bool = True) -> argparse.ArgumentParser:
    """The CLI's parser; ``with_studies=False`` leaves out the bench studies (importing them takes half a second)."""
    parser = argparse.ArgumentParser(
        prog="python -m metanlp",
        description="Transfer learning and meta-learning for few-shot NLP.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    datasets = commands.add_parser("datasets", help="list the built-in datasets")
    datasets.add_argument("--json", action="store_true", help="print JSON instead of a table")

    methods = commands.add_parser("methods", help="list the registered methods")
    methods.add_argument("--json", action="store_true", help="print JSON instead of a table")

    episodes = commands.add_parser(
        "episodes", help="sample fixed evaluation episodes and save them",
        description="Sample fixed episodes and save them, so every method is scored on exactly the same tasks.",
    )
    add_task_arguments(episodes)
    episodes.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to sample" + DEFAULT)
    episodes.add_argument("--count", type=int, default=600, help="how many episodes" + DEFAULT)
    episodes.add_argument(  # --seed: its name before train and evaluate had both seeds
        "--eval-seed", "--seed", dest="eval_seed", type=int, default=RunConfig.eval_seed, help=EVAL_SEED_HELP
    )
    episodes.add_argument("--out", required=True, help="output file (.json or .json.gz)")

    train = commands.add_parser(
        "train", help="meta-train (or train) a method, then evaluate it",
        description="Meta-train (or train) a method on the meta-train classes, then evaluate it on test episodes "
        "of the meta-test classes. The run is stored, so it appears on the dashboard's Runs page.",
    )
    add_task_arguments(train)
    add_method_arguments(train)
    train.add_argument("--steps", type=int, default=RunConfig.train_steps,
                       help="meta-training steps on meta-train classes" + DEFAULT)
    train.add_argument("--name", default="", help="a name for the run")
    train.add_argument("--runs-dir", help="the run store folder (default: $METANLP_RUNS_DIR or ./runs)")

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a method without training it (or a trained run with --run)",
        description="Score a method on test episodes without meta-training it: right for methods with nothing "
        "to meta-learn (e.g. ProtoNet on frozen MiniLM); a method that meta-learns is scored untrained, so train "
        "it first ('train') and pass --run RUN_ID.",
    )
    add_task_arguments(evaluate)
    add_method_arguments(evaluate)
    evaluate.add_argument("--checkpoint", help="a saved method folder (a run's checkpoint) to evaluate")
    evaluate.add_argument("--run", help="evaluate the learned state of this stored run (its id)")
    evaluate.add_argument("--runs-dir", help="the run store folder (default: $METANLP_RUNS_DIR or ./runs)")

    sweep = commands.add_parser(
        "sweep", help="tune a method's options with Optuna; trials are runs scored on validation classes",
        description="Tune a method's options with Optuna (TPE sampler, median pruning). Every trial is an ordinary "
        "run (tagged sweep:NAME on the Runs page) scored by its accuracy on meta-validation classes, never test "
        "classes; the best configuration is then evaluated once on the saved test episodes. The study is kept "
        "beside the run store: the same command resumes an interrupted sweep.",
    )
    add_task_arguments(sweep)
    add_method_arguments(sweep)
    sweep.add_argument("--trials", type=int, default=20, help="trials to run" + DEFAULT)
    sweep.add_argument("--parallel", type=int, default=1, help="trials running at once (worker processes)" + DEFAULT)
    sweep.add_argument("--steps", type=int, default=200, help="meta-training steps of each trial" + DEFAULT)
    sweep.add_argument("--val-episodes", type=int, default=30, help="validation episodes scoring a trial" + DEFAULT)
    sweep.add_argument(
        "--param", action="append", default=[], metavar="NAME=LOW:HIGH[:log] or NAME=A|B",
        help="a dimension of the search space (repeatable; default: the method's own default space)",
    )
    sweep.add_argument("--backend", choices=["local", "ray"], help="where trials execute (default: $METANLP_BACKEND, "
                       "else ray when $RAY_ADDRESS is set, else local worker processes)")
    sweep.add_argument("--name", dest="sweep_name", help="the sweep's name (default: method-dataset-Nway-Kshot); reuse it to resume")
    sweep.add_argument("--runs-dir", help="the run store folder (default: $METANLP_RUNS_DIR or ./runs)")

    retry = commands.add_parser("retry", help="run a failed or cancelled run again, as a new run (exit 0 when it finishes)")
    retry.add_argument("run_id", help="the run to retry (its id, as the Runs page and 'train' show it)")
    retry.add_argument("--resume", action="store_true", help="start from the run's last checkpoint, continuing "
                       "its step count, instead of from scratch")
    retry.add_argument("--runs-dir", help="the run store folder (default: $METANLP_RUNS_DIR or ./runs)")
    retry.add_argument("--output", help="write the history and evaluation as JSON to this file")
    retry.add_argument("--no-progress", action="store_true")

    doctor = commands.add_parser("doctor", help="check the run store; exit 0 when healthy, 1 when it found problems")
    doctor.add_argument("--runs-dir", help="the run store folder (default: $METANLP_RUNS_DIR or ./runs)")
    doctor.add_argument("--reset-store", action="store_true", help="if the database is damaged, move it aside "
                        "(renamed with a timestamp, never deleted), start a fresh store and copy into it what still reads")
    bench = commands.add_parser("bench", help="every method on the same saved test episodes; writes docs/results.md")
    bench.add_argument("--methods", help="comma-separated method names (default: every registered method)")
    bench.add_argument("--datasets", help="comma-separated datasets (default: clinc150,banking77,huffpost,fewrel)")
    bench.add_argument("--shots", help="comma-separated K values (default: 1,5)")
    bench.add_argument("--data-file", help="bench your own CSV/TSV/JSONL file (a text and a label column) as the "
                       "dataset 'user' (replaces --datasets)")
    bench.add_argument("--text-column", default="text", help="the text column of --data-file" + DEFAULT)
    bench.add_argument("--label-column", default="label", help="the label column of --data-file" + DEFAULT)
    bench.add_argument("--episodes", type=int, help="test episodes per cell (default 600; --quick 30)")
    bench.add_argument("--train-steps", type=int, help="meta-training steps per cell (default: each method's "
                       "recommended_train_steps; --quick 10)")
    bench.add_argument("--seeds", type=int, help="training seeds per cell of a method that meta-trains "
                       "(default 3; --quick 1); a method with nothing to meta-train runs once")
    bench.add_argument(
        "--splits", action="append", type=parse_splits, default=[], metavar="DATASET=IDS",
        help="class splits to bench a dataset on, e.g. fewrel=all, clinc150=01,03 or fewrel=default "
             "(repeatable; default: fewrel=all, other datasets their default split; --quick: default splits)",
    )
    bench.add_argument("--n-query", type=int, default=5)
    bench.add_argument("--encoder", default="minilm", choices=["minilm", "scratch"])
    bench.add_argument("--device", default="auto")
    bench.add_argument("--quick", action="store_true", help="a smoke check: 30 episodes, 10 training steps")
    bench.add_argument("--runs-dir", help="the run store folder (default: $METANLP_RUNS_DIR or ./runs)")
    bench.add_argument("--report", default="docs/results.md", help="results file whose bench section is rewritten")
    bench.add_argument("--no-report", action="store_true", help="only fill the store")
    bench.add_argument("--backend", choices=["local", "ray"], help="where cells run: in this process (local, the "
                       "default) or as runs on a Ray cluster ($RAY_ADDRESS, else a local one), --parallel at a time")
    bench.add_argument("--parallel", type=int, default=2, help="with --backend ray: cells running at once" + DEFAULT)
    bench.add_argument("--export-results", metavar="FILE", help="also write the command's pooled rows as JSON "
                       "(what the Leaderboard shows before a user has bench results of their own)")
    bench.add_argument("--report-only", action="store_true", help="compute nothing: write the report from the cells "
                       "already finished in the store (saying how many of the command's cells are missing)")
    bench.add_argument(
        "--option", action="append", type=parse_option, default=[], metavar="METHOD.KEY=VALUE",
        help="a method option for the bench cells of that method, e.g. maml.head_hidden=128 (repeatable)",
    )
    bench.add_argument("--section", help="marked section of the report to rewrite (default: 'bench', "
                       "or 'bench-quick' with --quick); charts are named after it")
    bench.add_argument("--no-progress", action="store_true")
    bench.add_argument(
        "--embedding-cache", metavar="FILE",
        help="keep the frozen encoder's sentence embeddings in FILE between bench commands (read if it exists, "
        "written at the end); refused if it was made by another encoder",
    )
    from metanlp.bench.studies import add_study_parsers

    if with_studies:
        add_study_parsers(bench)  # 'bench STUDY [options]' runs one study; bare 'bench' the grid above
    return parser


def config_from_args(args: argparse.Namespace, train_steps: int) -> RunConfig:
    data_options = {}
    if args.data_file:
        data_options = {"text_column": args.text_column, "label_column": args.label_column}
    return RunConfig(
        method=args.method,
        dataset="user" if args.data_file else args.dataset,
        data_file=args.data_file,
        data_options=data_options,
        split_id=args.split_id,
        n_way=args.n_way,
        k_shot=args.k_shot,
        n_query=args.n_query,
        train_steps=train_steps,
        eval_episodes=args.episodes,
        eval_seed=args.eval_seed,
        episodes_file=args.episodes_file,
        encoder=args.encoder,
        encoder_options=dict(args.encoder_option),
        method_options=dict(args.option),
        seed=args.seed,
        device=args.device,
        name=getattr(args, "name", ""),
    ).validate()


class ProgressPrinter:
    """Turns engine events into tqdm bars on stderr (one per stage).

    ``already_said`` holds messages printed before the run (e.g. the data split), not repeated as warnings.
    """

    def __init__(self, enabled: bool, already_said: tuple[str, ...] = ()) -> None:
        self.enabled = enabled
        self.already_said = set(already_said)
        self.bars: dict[str, object] = {}

    def __call__(self, event: dict) -> None:
        if event["event"] == "warning" and event["message"] not in self.already_said:
            print(f"warning: {event['message']}", file=sys.stderr)
        if event["event"] == "no_meta_training":
            print(f"note: {event['message']}", file=sys.stderr)
        if not self.enabled or event["event"] != "progress":
            return
        from tqdm import tqdm

        stage = event["stage"]
        if stage not in self.bars:
            for bar in self.bars.values():
                bar.close()
            self.bars[stage] = tqdm(total=event["total"], desc=stage, file=sys.stderr, leave=False)
        bar = self.bars[stage]
        bar.update(event["done"] - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def write_output(results: dict, output: str | None) -> None:
    text = json.dumps(results, indent=2)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
        print(f"results written to {output}", file=sys.stderr)


def dataset_label(config: RunConfig) -> str:
    """What a result line calls the data: the built-in dataset's name, or the user's file name."""
    return Path(config.data_file).name if config.dataset == "user" and config.data_file else config.dataset


def result_line(config: RunConfig, evaluation: dict) -> str:
    """One line per result: method, data, task, encoder, accuracy with its 95% CI (``evaluation`` as stored)."""
    return (
        f"{config.method} · {dataset_label(config)} · {config.n_way}-way {config.k_shot}-shot · {config.encoder}: "
        f"accuracy {100 * evaluation['mean_accuracy']:.2f} ± {100 * evaluation['ci95']:.2f}% over "
        f"{evaluation['episodes']} episodes (95% CI), {evaluation['seconds']:.1f} s"
    )


def load_and_announce(config: RunConfig) -> tuple[TextDataset, list[str]]:
    """The config's (dataset, warnings); for a user's file, first print how it is split and its warnings.

    The split depends on N, K and the queries (a small file may share its classes), so the user
    sees the choice and its reason before anything runs, not only when an episode cannot be drawn.
    """
    from metanlp.engine.training import load_run_dataset

    dataset, warnings = load_run_dataset(config)
    if config.dataset == "user":
        print(f"data: {dataset.description} {dataset.split_note}", file=sys.stderr)
        for warning in warnings:
            if warning != dataset.split_note:
                print(f"warning: {warning}", file=sys.stderr)
    return dataset, warnings


def said_up_front(config: RunConfig, dataset: TextDataset, warnings: list[str]) -> tuple[str, ...]:
    """What ``load_and_announce`` printed, so the run's own warnings do not repeat it."""
    return (*warnings, dataset.split_note) if config.dataset == "user" else ()


def note_untrained(config: RunConfig) -> None:
    """Say so when ``evaluate`` scores a configuration that meta-learns without meta-training it."""
    from metanlp.methods import would_meta_learn

    if would_meta_learn(config.method, config.method_options, config.encoder):
        print(
            f"note: {config.method} meta-learns in this configuration, but 'evaluate' does not train: this scores "
            f"its untrained (freshly initialised) parameters. To score it trained, run 'python -m metanlp train "
            f"--method {config.method} ...' (the same data and task options), then 'evaluate --run RUN_ID'.",
            file=sys.stderr,
        )


def command_datasets(args: argparse.Namespace) -> int:
    from metanlp.data.registry import list_datasets

    infos = list_datasets()
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2, default=str))
        return 0
    print(f"{'name':<15}{'lang':<6}{'classes':>8}{'examples':>10}  {'train/val/test classes':<24}description")
    for info in infos:
        splits = "/".join(str(info.classes_per_split.get(s, 0)) for s in ("train", "val", "test"))
        print(f"{info.name:<15}{info.language:<6}{info.n_classes:>8}{info.n_examples:>10}  {splits:<24}{info.description}")
    return 0


def command_methods(args: argparse.Namespace) -> int:
    from metanlp.methods import default_options, method_cards

    cards = method_cards()
    if args.json:
        print(json.dumps([{**card.__dict__, "options": default_options(card.name)} for card in cards], indent=2))
        return 0
    for card in cards:
        print(f"{card.name:<20}{card.family:<20}{card.title}")
        if card.caveat:
            print(f"{'':<20}note: {card.caveat}")
    return 0


def command_episodes(args: argparse.Namespace) -> int:
    from metanlp.data.episodes import save_episodes
    from metanlp.engine.training import make_sampler

    config = config_from_args(argparse.Namespace(**{**vars(args), "method": "protonet", "encoder": "minilm",
                                                    "encoder_option": [], "option": [], "device": "auto",
                                                    "episodes": args.count, "episodes_file": None, "seed": 0}), 0)
    dataset, _ = load_and_announce(config)
    episodes = make_sampler(dataset, args.split, config, args.eval_seed).take(args.count)
    description = {"dataset": dataset_label(config), "split_id": config.split_id, "split": args.split,
                   "n_way": args.n_way, "k_shot": args.k_shot, "n_query": args.n_query, "seed": args.eval_seed}
    path = save_episodes(episodes, args.out, description)
    print(f"{len(episodes)} episodes written to {path}")
    return 0


def create_run_when_a_slot_is_free(store, create, poll: float = 0.5) -> str:
    """``create(limit)`` the CLI's run as soon as fewer runs than the machine's limit are running.

    Dashboard and CLI runs share one limit (``METANLP_MAX_CONCURRENT``, else 1 on a CPU, 2 with a
    GPU): a CLI run waits here, saying so once, while runs of dead processes are marked failed.
    """
    from metanlp.runs.manager import default_max_concurrent
    from metanlp.runs.queue import RunSlotsBusy
    from metanlp.runs.supervisor import fail_orphaned_runs

    limit = default_max_concurrent()
    said = False
    while True:
        try:
            return create(limit)
        except RunSlotsBusy as busy:
            if fail_orphaned_runs(store):
                continue
            if not said:
                print(f"waiting for a free run slot: {busy.running} run(s) running, at most {limit} at once "
                      f"({MAX_CONCURRENT_HINT}); Ctrl-C to give up", file=sys.stderr, flush=True)
                said = True
            time.sleep(poll)


def command_train(args: argparse.Namespace) -> int:
    """Train through the run store, so CLI runs appear in the dashboard's Runs page."""
    import os

    from metanlp.runs import RunStore, check_run_config
    from metanlp.runs.manager import check_run_data

    config = check_run_config(config_from_args(args, args.steps))
    dataset, warnings = load_and_announce(config)
    check_run_data(config, (dataset, warnings))  # a bad file or an impossible task: exit 2, and no run is stored
    store = RunStore(args.runs_dir)
    run_id = create_run_when_a_slot_is_free(
        store, lambda limit: store.create_run(config, args.name, claimed_by=os.getpid(), max_running=limit)
    )
    return execute_and_report(store, run_id, config, args, said_up_front(config, dataset, warnings))


def command_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) an Optuna sweep over a method's options; prints the trials and the best configuration."""
    from metanlp.runs import RunStore
    from metanlp.runs.manager import RunManager, check_run_config
    from metanlp.sweeps.runner import SweepSpec, check_sweep, run_sweep, trials_table
    from metanlp.sweeps.space import parse_param, search_space

    base = check_run_config(config_from_args(args, args.steps))
    space = search_space(base.method, [parse_param(text) for text in args.param])
    name = args.sweep_name or re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{base.method}-{dataset_label(base)}-{base.n_way}way-{base.k_shot}shot")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}", name):
        raise ConfigError(f"--name must be letters, digits, '.', '_' or '-', got {name!r}")
    spec = SweepSpec(name=name, base=base, space=space, trials=args.trials, parallel=args.parallel,
                     test_episodes=args.episodes, val_episodes=args.val_episodes, sampler_seed=args.seed)
    check_sweep(spec)
    store = RunStore(args.runs_dir)
    print(f"sweep {name}: {args.trials} trials over {', '.join(param.describe() for param in space)}; "
          f"study in {store.root}", file=sys.stderr)
    said: set[int] = set()

    def progress(study, runs) -> None:
        for row in trials_table(study):
            if row["state"] != "running" and row["trial"] not in said:
                said.add(row["trial"])
                value = row["validation accuracy"]
                score = f"{100 * value:.2f}%" if value is not None else row["state"]
                options = ", ".join(f"{param.name}={row.get(param.name)!r}" for param in space)
                print(f"trial {row['trial']}: {score} ({options}) run {row['run']}", file=sys.stderr, flush=True)

    preload = (base.encoder,) if base.encoder == "minilm" else ()
    with RunManager(store, max_concurrent=args.parallel, preload=preload, backend=args.backend) as manager:
        outcome = run_sweep(spec, store, manager, on_progress=progress)
    completed = [row for row in trials_table(outcome.study) if row["state"] == "complete"]
    if not completed:
        print("error: no trial completed", file=sys.stderr)
        return 1
    best = outcome.study.best_trial
    print(f"best: trial {best.number}, validation accuracy {100 * best.value:.2f}%, "
          + ", ".join(f"{key}={value!r}" for key, value in best.params.items()))
    if outcome.best_run:
        record = store.get_run(outcome.best_run)
        if record.evaluation:
            print(f"best configuration on {record.evaluation['episodes']} test episodes (run {record.id}): "
                  f"{100 * record.evaluation['mean_accuracy']:.2f} ± {100 * record.evaluation['ci95']:.2f}%")
        else:
            print(f"the best configuration's test run {record.id} {record.status}: {record.error or ''}")
    return 0


def command_retry(args: argparse.Namespace) -> int:
    """Run a failed or cancelled run again as a new run (from its last checkpoint with --resume)."""
    import os

    from metanlp.runs import RunStore
    from metanlp.runs.database import InvalidRunId, RunNotFound
    from metanlp.runs.resume import RetryError, retry_run
    from metanlp.runs.supervisor import fail_orphaned_runs

    store = RunStore(args.runs_dir)
    fail_orphaned_runs(store)  # a killed run still marked running is failed first, so it can be retried
    try:
        run_id = create_run_when_a_slot_is_free(
            store, lambda limit: retry_run(store, args.run_id, args.resume, claimed_by=os.getpid(), max_running=limit)
        )
    except (RetryError, RunNotFound, InvalidRunId) as error:
        raise ConfigError(str(error)) from None
    config = RunConfig.from_dict(store.get_run(run_id).config)
    return execute_and_report(store, run_id, config, args, ())


def execute_and_report(store, run_id: str, config: RunConfig, args: argparse.Namespace, said: tuple[str, ...]) -> int:
    """Execute a CLI run created in this process, print its result and write ``--output``; the exit code."""
    from metanlp.runs import execute_run
    from metanlp.runs.supervisor import ensure_supervisor

    ensure_supervisor(store.root)  # marks the run failed at once should this process be killed
    print(f"run {run_id} in {store.root}", file=sys.stderr)
    progress = ProgressPrinter(not args.no_progress, already_said=said)
    try:
        status = execute_run(store, run_id, on_event=progress)
    finally:
        progress.close()
    record = store.get_run(run_id)
    if status != "done":
        print(f"error: run {run_id} {status}: {record.error or ''}".rstrip(": "), file=sys.stderr)
        return 1
    metrics = store.metrics(run_id, phases=("train",))
    if len(metrics):
        last = metrics.iloc[-1]
        print(f"last training step {int(last['step'])}: support loss {last['support_loss']:.4f}, "
              f"query loss {last['query_loss']:.4f}, query accuracy {last['query_accuracy']:.3f}")
    evaluation = record.evaluation
    if evaluation:
        print(result_line(config, evaluation))
        per_episode = store.episode_results(run_id).to_dict(orient="records")
        evaluation = {**evaluation, "per_episode": per_episode}  # as 'evaluate --output' writes it
    history = [
        {key: value for key, value in row.items() if value == value}  # drop NaN cells
        for row in store.metrics(run_id).to_dict(orient="records")
    ]
    write_output({"run_id": run_id, "config": config.to_dict(), "history": history,
                  "evaluation": evaluation, "checkpoint": str(store.checkpoint_dir(run_id))}, args.output)
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from metanlp.device import resolve_device
    from metanlp.engine.checkpoint import load_method
    from metanlp.engine.training import evaluation_episodes, run_training
    from metanlp.evaluation import evaluate

    config = config_from_args(args, 0)
    dataset, warnings = load_and_announce(config)
    if not (args.run or args.checkpoint):
        note_untrained(config)
    progress = ProgressPrinter(not args.no_progress, already_said=said_up_front(config, dataset, warnings))
    try:
        owner = None
        if args.run:
            from metanlp.runs import RunStore

            store = RunStore(args.runs_dir)
            record = store.get_run(args.run)
            if record.status != "done":
                raise DataError(f"Run {args.run} is {record.status}: only a finished (done) run has a trained "
                                "method to evaluate.")
            args.checkpoint, owner = str(store.checkpoint_dir(args.run)), f"run {args.run}"
        if args.checkpoint:
            method = load_method(args.checkpoint, resolve_device(config.device), owner=owner)
            episodes = evaluation_episodes(dataset, config)
            total = len(episodes)
            evaluation = evaluate(method, episodes, on_episode=lambda i, _: progress(
                {"event": "progress", "stage": "evaluate", "done": i + 1, "total": total}))
        else:
            evaluation = run_training(config, on_event=progress).evaluation
    finally:
        progress.close()
    print(result_line(config, evaluation.to_dict(include_episodes=False)))
    write_output({"config": config.to_dict(), "evaluation": evaluation.to_dict()}, args.output)
    return 0


def command_doctor(args: argparse.Namespace) -> int:
    """Check the store (and, when asked, move a damaged database aside); 0 when healthy, 1 otherwise."""
    from metanlp.runs.doctor import check_store, reset_store

    if args.reset_store:
        for line in reset_store(args.runs_dir).lines():
            print(line)
    report = check_store(args.runs_dir)
    print("\n".join(report.lines()))
    if report.damaged and not args.reset_store:
        print("To move the damaged database aside and start a fresh store, add --reset-store.")
    return 0 if report.healthy else 1


def csv_list(text: str | None, cast=str) -> tuple:
    return tuple(cast(item.strip()) for item in text.split(",") if item.strip()) if text else ()


def bench_command(args: argparse.Namespace) -> str:
    """The command line that reproduces this bench (the options that change what runs)."""
    parts = ["python -m metanlp bench"]
    for option in ("methods", "datasets", "shots", "episodes", "train_steps", "seeds", "encoder"):
        value = getattr(args, option)
        if value is not None and not (option == "encoder" and value == "minilm"):
            parts.append(f"--{option.replace('_', '-')} {value}")
    if getattr(args, "data_file", None):
        parts.append(f"--data-file {args.data_file} --text-column {args.text_column} --label-column {args.label_column}")
    parts += [f"--splits {dataset}={','.join(ids) or 'default'}" for dataset, ids in args.splits]
    parts += [f"--option {key}={json.dumps(value)}" for key, value in args.option]
    if args.section:
        parts.append(f"--section {args.section}")
    if args.quick:
        parts.append("--quick")
    return " ".join(parts)


def bench_settings_from_args(args: argparse.Namespace):
    """The ``BenchSettings`` a ``bench`` command line asks for (``ConfigError`` naming a bad option)."""
    from metanlp.bench.plan import BenchSettings, quick_settings

    try:
        shots = csv_list(args.shots, int)
    except ValueError:
        raise ConfigError(f"--shots must be comma-separated whole numbers, got {args.shots!r}") from None
    datasets = csv_list(args.datasets)
    if getattr(args, "data_file", None):
        if datasets:
            raise ConfigError("--data-file replaces --datasets: give one or the other")
        if not Path(args.data_file).is_file():
            raise DataError(f"The data file {args.data_file} does not exist (or is not a file).")
        datasets = ("user",)
    overrides = {key: value for key, value in {
        "methods": csv_list(args.methods), "datasets": datasets, "shots": shots,
        "episodes": args.episodes, "train_steps": args.train_steps, "seeds": args.seeds, "n_query": args.n_query,
        "encoder": args.encoder, "device": args.device,
    }.items() if value not in (None, ())}
    method_options: dict[str, dict] = {}
    for key, value in args.option:
        method, _, option = key.partition(".")
        if not method or not option:
            raise ConfigError(f"--option needs METHOD.KEY=VALUE (e.g. maml.head_hidden=128), got {key!r}")
        method_options.setdefault(method, {})[option] = value
    if method_options:
        overrides["method_options"] = method_options
    if getattr(args, "data_file", None):
        overrides["data_file"] = str(Path(args.data_file).resolve())
        overrides["data_options"] = {"text_column": args.text_column, "label_column": args.label_column}
    settings = quick_settings(**overrides) if args.quick else BenchSettings(**overrides)
    settings.splits = {**settings.splits, **dict(args.splits)}
    unknown = sorted(set(method_options) - set(settings.resolved_methods()))
    if unknown:
        raise ConfigError(f"--option names method(s) not in this bench: {', '.join(unknown)}")
    return settings


def command_bench(args: argparse.Namespace) -> int:
    from metanlp.bench.plan import bench_note, cell_names
    from metanlp.bench.report import write_report
    from metanlp.bench.runner import run_bench
    from metanlp.runs import RunStore

    settings = bench_settings_from_args(args)
    if settings.data_file:  # a user's file that cannot supply the episodes: one clear line, nothing run
        from metanlp.bench.plan import bench_configs
        from metanlp.runs.manager import check_run_data

        for k_shot in settings.shots:
            check_run_data(next(config for config in bench_configs(settings) if config.k_shot == k_shot))
    section = args.section or ("bench-quick" if args.quick else "bench")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,40}", section):
        raise ConfigError(f"--section must be a short name of lowercase letters, digits, '-' or '_', got {section!r}")
    store = RunStore(args.runs_dir)
    if args.report_only:
        if args.no_report:
            raise ConfigError("--report-only and --no-report together would do nothing")
        wanted = cell_names(settings)
        finished, needed = bench_completion(settings, store)
        note = bench_note(settings, bench_command(args))
        if finished < needed:
            note += (f" **Partial: {finished} of the {needed} cells it needs have finished so far**; the others are "
                     "missing from the tables (rerun the command without --report-only to compute them; finished "
                     "cells are reused).")
        heading = "Bench: quick smoke check" if args.quick else "Bench: every method on the same episodes"
        path = write_report(store, Path(args.report), note, wanted, section, heading)
        print(f"{finished} of {needed} cells finished; results written to {path}")
        export_bench_results(args, store, wanted, note)
        return 0
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=None, desc="bench cells", file=sys.stderr)

    def on_progress(done: int, total: int, config: RunConfig, status: str) -> None:
        if bar is not None:
            bar.total = total
            bar.set_postfix_str(f"{config.method} {config.dataset} {config.k_shot}-shot: {status}")
            bar.update(done - bar.n)

    try:
        embedding_file = Path(args.embedding_cache) if args.embedding_cache else None
        if args.backend == "ray":
            from metanlp.runs.manager import RunManager

            if not 1 <= args.parallel <= 256:
                raise ConfigError(f"--parallel must be between 1 and 256, got {args.parallel}")
            with RunManager(store, max_concurrent=args.parallel, backend="ray") as manager:
                report = run_bench(settings, store, on_progress, executor=manager, in_flight=args.parallel)
        else:
            report = run_bench(settings, store, on_progress, embedding_file=embedding_file)
    finally:
        if bar is not None:
            bar.close()
    print(f"bench: {len(report.computed)} cells computed, {len(report.reused)} reused from the store, "
          f"{len(report.single_run)} seeds skipped (not meta-trained: one run), "
          f"{len(report.failed)} failed, {report.seconds:.0f} s "
          f"(of which {sum(report.embedding_seconds.values()):.0f} s embedding test sentences up front)")
    for config, error in report.failed:
        print(f"failed: {config.method} on {config.dataset} {config.k_shot}-shot: {error}", file=sys.stderr)
    if not args.no_report:
        note = bench_note(settings, bench_command(args))
        heading = "Bench: quick smoke check" if args.quick else "Bench: every method on the same episodes"
        path = write_report(store, Path(args.report), note, cell_names(settings), section, heading)
        print(f"results written to {path}")
    export_bench_results(args, store, cell_names(settings), bench_note(settings, bench_command(args)))
    return 1 if report.failed else 0


def bench_completion(settings, store) -> tuple[int, int]:
    """(finished, needed) cells of a bench: seeds after the first of a method that did not meta-train are not needed."""
    from metanlp.bench.plan import bench_configs, cell_name, seed_group_key
    from metanlp.bench.runner import finished_cells

    finished = finished_cells(store)
    first_seed = settings.training_seeds()[0]
    configs = bench_configs(settings)
    single = {seed_group_key(config) for config in configs if config.seed == first_seed
              and (run := finished.get(cell_name(config))) is not None
              and not store.get_run(run).evaluation.get("meta_trained", True)}
    needed = [config for config in configs if config.seed == first_seed or seed_group_key(config) not in single]
    return sum(cell_name(config) in finished for config in needed), len(needed)


def export_bench_results(args: argparse.Namespace, store, cells: set[str], note: str) -> None:
    """``--export-results FILE``: the command's pooled rows with the command and the machine."""
    if not args.export_results:
        return
    from metanlp.bench.machine import machine_description
    from metanlp.bench.results import bench_results, export_results

    path = export_results(bench_results(store, cells), args.export_results, bench_command(args),
                          machine_description(), note)
    print(f"results exported to {path}")


COMMANDS = {
    "bench": command_bench,
    "datasets": command_datasets,
    "methods": command_methods,
    "episodes": command_episodes,
    "train": command_train,
    "retry": command_retry,
    "sweep": command_sweep,
    "evaluate": command_evaluate,
    "doctor": command_doctor,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(with_studies=argv[:1] == ["bench"]).parse_args(argv)
    try:
        return (getattr(args, "study_run", None) or COMMANDS[args.command])(args)
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
