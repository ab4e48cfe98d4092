"""Time to quality: a chapter's reference settings against its fast recipe.

It trains the chapter twice, as `python <chapter>.py` (the reference) and as
`python <chapter>.py <fast recipe>`, measures both after every epoch (see
how_much_training.py; the measuring is left out of the training time), and
prints the README's time-to-quality rows: epochs, training time, test loss
per image, and the conditional accuracy or the restored PSNR and SSIM. It
also draws both runs' test loss and quality against training time.

    python benchmarks/time_to_quality.py cvae_onehot     # about 15 minutes on 2 cores
    python benchmarks/time_to_quality.py denoising_vae --fast "--epochs 2 --lr-schedule cosine"
    python benchmarks/time_to_quality.py cvae_onehot --train-samples 2048 --epochs 2

Flags other than its own go to the chapter in both runs (before the fast
recipe's, which win).
"""

import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from support import startup  # noqa: E402, F401  (first: quiets TensorFlow as it loads)

from how_much_training import CHAPTERS, measure_training, refuse_flags_of_a_run_folder  # noqa: E402, E501
from support.errors import OneLineErrorParser, run_main  # noqa: E402
from support.flags import output_file_problem  # noqa: E402
from support.run_folder import save_json  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402
from visualization_utils import save_figure  # noqa: E402

# The fastest settings found to reach the reference run's quality (the
# README's "Time to quality" lists what else was tried). The denoiser's loss
# sums the reconstruction over the batch but averages the KL, so a batch of
# 64 weighs the KL twice as much as one of 128: --beta 0.5 puts the balance back.
FAST_RECIPES = {
    "cvae_onehot": "--epochs 5 --lr-schedule cosine --learning-rate 5e-3",
    "cvae_embedding": "--epochs 5 --lr-schedule cosine --learning-rate 5e-3",
    "denoising_vae": "--epochs 2 --batch-size 64 --beta 0.5 --lr-schedule cosine "
                     "--learning-rate 5e-3",
}


def quality_columns(chapter_name):
    """(key, header, format) of the columns besides the loss."""
    if chapter_name == "denoising_vae":
        return [("psnr_db", "PSNR of the restored test digits", "{:.2f} dB"),
                ("ssim", "SSIM", "{:.3f}")]
    return [("conditional_accuracy", "conditional accuracy of the samples", "{:.1%}")]


def table(chapter_name, runs):
    """The README's Markdown rows, one per recipe: its last epoch."""
    columns = quality_columns(chapter_name)
    header = ["recipe", "epochs", "training time", "test loss per image",
              *[name for _, name, _ in columns], "command"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for recipe, run in runs.items():
        last = run["rows"][-1]
        command = " ".join(["python", f"{chapter_name}.py", *run["flags"]])
        cells = [recipe, str(last["epochs"]), f"{last['training_seconds']:.0f} s",
                 f"{last['test_loss_per_image']:.2f}",
                 *[form.format(last[key]) for key, _, form in columns], f"`{command}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_up(runs):
    """How much less training time the fast recipe took, and whether it
    reached the reference's final test loss."""
    reference, fast = runs["reference"]["rows"][-1], runs["fast"]["rows"][-1]
    return {"times_faster": reference["training_seconds"] / fast["training_seconds"],
            "loss_gap": fast["test_loss_per_image"] - reference["test_loss_per_image"]}


def plot_time_to_quality(chapter_name, runs, path):
    """Test loss and quality of both runs after each epoch, against training
    time, with the reference's final values dotted."""
    key, name, _ = quality_columns(chapter_name)[0]
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    for axes, measured, label in zip(figure.subplots(1, 2),
                                     ["test_loss_per_image", key],
                                     ["test loss per image (nats)",
                                      name + (" (dB)" if key == "psnr_db" else "")]):
        for recipe, run in runs.items():
            minutes = [row["training_seconds"] / 60 for row in run["rows"]]
            axes.plot(minutes, [row[measured] for row in run["rows"]], marker="o",
                      label=f"{recipe}: {run['recipe'] or 'the defaults'}")
        axes.axhline(runs["reference"]["rows"][-1][measured], color="grey", linestyle=":",
                     label="the reference's final value")
        axes.set(xlabel="training time (minutes)", ylabel=label, xlim=(0, None))
        if measured == "conditional_accuracy":
            axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        axes.grid(alpha=0.3)
    figure.legend(*axes.get_legend_handles_labels(), loc="outside lower center", ncols=3,
                  fontsize="small")
    figure.suptitle(f"{chapter_name}.py: reference settings against the fast recipe "
                    "(a dot per epoch)")
    return save_figure(figure, path)


def main(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("chapter", choices=sorted(CHAPTERS))
    parser.add_argument("--fast", default=None,
                        help="the fast recipe's chapter flags, in quotes "
                        "(default: the README's recipe for the chapter)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default outputs/time_to_quality_<chapter>.json; "
                        "the plot goes beside it as .png)")
    config, shared_flags = parser.parse_known_args(argv)
    try:
        fast_flags = shlex.split(config.fast if config.fast is not None
                                 else FAST_RECIPES[config.chapter])
    except ValueError as error:  # an unclosed quote
        parser.error(f"--fast {config.fast!r}: {error}")
    refuse_flags_of_a_run_folder(parser, shared_flags + fast_flags)
    output = config.output or REPO / "outputs" / f"time_to_quality_{config.chapter}.json"
    if output_file_problem(output):
        parser.error(f"--output {output}: {output_file_problem(output)}")
    recipes = [("reference", []), ("fast", fast_flags)]
    for _, own_flags in recipes:  # a bad flag stops the script before any training
        CHAPTERS[config.chapter].parse_settings(shared_flags + own_flags)
    runs = {}
    for recipe, own_flags in recipes:
        flags = shared_flags + own_flags
        print(f"{recipe}: python {config.chapter}.py {' '.join(flags)}", flush=True)
        runs[recipe] = {"flags": flags, "recipe": " ".join(own_flags),
                        "rows": measure_training(config.chapter, flags)}
    summary = speed_up(runs)
    save_json({"chapter": config.chapter, "runs": runs, **summary}, output)
    plot_time_to_quality(config.chapter, runs, output.with_suffix(".png"))
    print(table(config.chapter, runs))
    print(f"The fast recipe trained {summary['times_faster']:.2f}x faster; its test loss is "
          f"{summary['loss_gap']:+.2f} per image from the reference's.")
    print(f"Wrote {output} and {output.with_suffix('.png')}")
    return runs


if __name__ == "__main__":
    run_main(main)
