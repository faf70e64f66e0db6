"""`dora demo`: the mixture-shift world end to end on a CPU.

Stages, per seed: build the world (``dora.synthetic``), build a tiny Llama and a character tokenizer
locally, SFT it on the task, score every response with the source classifier (tfidf, cross-fitted) and
turn the probabilities into DoRA weights, then train each method from the same SFT checkpoint on the
same data and evaluate on the held-out human split: preference accuracy and reward margin of the
implicit reward, and task accuracy of greedy generations. Prints and writes a Markdown table, a JSON
file and a PNG plot.
"""

from dora.demo.cli import add_arguments, run
from dora.demo.report import paired_differences, summarise
from dora.demo.stages import METHODS, NO_LABELS, generation_accuracy, run_demo, sft

__all__ = ["METHODS", "NO_LABELS", "add_arguments", "run", "run_demo", "sft", "generation_accuracy",
           "summarise", "paired_differences"]
