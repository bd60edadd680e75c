"""`tallformer eval`: score detections with the official ActivityNet protocol (numpy only)."""

from __future__ import annotations

import argparse

from tallformer.commands.common import subparser


def register(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "eval",
        help="score detections against ground truth (ActivityNet protocol, exact official numbers)",
        description=(
            "Compute detection mAP at several tIoU thresholds exactly as the official ActivityNet "
            "evaluator (Evaluation/eval_detection.py) does, in a fraction of its time. Ground truth "
            "is ActivityNet JSON ({\"database\": {video: {\"subset\", \"annotations\": [{\"segment\", "
            "\"label\"}]}}}); predictions are ActivityNet results JSON ({\"results\": {video: "
            "[{\"segment\", \"label\", \"score\"}]}}). Predictions on videos that are not in the "
            "evaluated subset count as false positives, as in the official code. The folders of "
            "--out and --plot are checked before the evaluation. Exit status 2 on bad input or an "
            "output that cannot be written."
        ),
        example_lines=(
            "tallformer eval --gt data/thumos14/annotations.json --pred runs/x/results.json "
            "--dataset thumos14 --subset test",
            "tallformer eval --gt activity_net.v1-3.min.json --pred results.json --subset validation "
            "--out metrics.json",
            "tallformer eval --gt gt.json --pred results.json --tiou 0.5 0.75 0.95",
            "tallformer eval --gt data/thumos14/annotations.json --pred runs/th14/test/epoch_0600/results.json "
            "--dataset thumos14 --subset test --plot runs/th14/test/epoch_0600/pr",
        ),
    )
    p.add_argument("--gt", required=True, metavar="FILE", help="ground truth, ActivityNet JSON")
    p.add_argument("--pred", required=True, metavar="FILE",
                   help="predictions, ActivityNet results JSON")
    thr = p.add_mutually_exclusive_group()
    thr.add_argument("--dataset", choices=("thumos14", "anet"), default=None,
                     help="tIoU preset: thumos14 = 0.3 0.4 0.5 0.6 0.7; anet = "
                          "numpy.linspace(0.5, 0.95, 10) (the default)")
    thr.add_argument("--tiou", type=float, nargs="+", metavar="T",
                     help="explicit tIoU thresholds in [0, 1]")
    p.add_argument("--subset", default=None, metavar="NAME",
                   help="ground-truth subset to evaluate (default: the only one present)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="also write the metrics as JSON (tiou_thresholds, mAP, average_mAP, "
                        "per_class_AP, num_videos, num_ground_truth, num_predictions)")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="also draw per-class precision-recall curves (one curve per tIoU) into DIR: "
                        "pr_<class>.png and the overview pr_curves.png")
    p.add_argument("--ignore-unknown-labels", action="store_true",
                   help="drop predictions whose label is not a ground-truth class (with a "
                        "warning) instead of failing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tallformer.atomic import check_writable, write_json
    from tallformer.errors import output_error
    from tallformer.evaluation import THRESHOLD_PRESETS, evaluate, format_table

    if args.out:  # before the evaluation
        check_writable(Path(args.out).parent, "--out")
    if args.plot:
        check_writable(args.plot, "--plot")
    thresholds = args.tiou if args.tiou else THRESHOLD_PRESETS[args.dataset or "anet"]
    result = evaluate(args.gt, args.pred, thresholds, args.subset,
                      ignore_unknown_labels=args.ignore_unknown_labels)
    print(f"ground truth: {args.gt} ({result['num_videos']} videos, "
          f"{result['num_ground_truth']} instances, {len(result['per_class_AP'])} classes)")
    print(f"predictions:  {args.pred} ({result['num_predictions']} detections)")
    print(format_table(result))
    if args.out:
        try:
            write_json(args.out, result)
        except OSError as exc:
            raise output_error(args.out, exc, "--out") from None
        print(f"metrics written to {args.out}")
    if args.plot:
        import warnings

        from tallformer.evaluation import EvaluationWarning
        from tallformer.plots import plot_pr_curves

        with warnings.catch_warnings():  # the same warnings as above: said once
            warnings.simplefilter("ignore", EvaluationWarning)
            try:
                files = plot_pr_curves(args.plot, args.gt, args.pred, thresholds, args.subset,
                                       ignore_unknown_labels=args.ignore_unknown_labels)
            except OSError as exc:
                raise output_error(exc.filename or args.plot, exc, "--plot") from None
        print(f"precision-recall curves written to {args.plot} ({len(files)} files)")
    return 0
