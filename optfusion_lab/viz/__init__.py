"""Figures and fusion-graph diagrams (plotly), and DOT / Mermaid exports.

Every function is a pure function of data (a genotype, a history frame, a stability summary, result
documents) that returns a ``plotly.graph_objects.Figure``: show it in a notebook, ``write_html``
it, or export an image with ``fig.write_image`` when an image exporter (kaleido) is installed.
The wide figures (diagrams, histories over nodes, results) set a height but no width: they fill
the notebook's output area or the page (``autosize``), so pass a width to ``write_image``
(e.g. ``width=1400``), whose default is 700 pixels.

From a run folder, one call per figure::

    from optfusion_lab import viz
    run = viz.from_run("runs/search/teacher")
    run.alpha_evolution()          # alpha per edge over steps, threshold and crossings
    run.operation_weights()        # softmax(beta) per node over steps, final choice starred
    run.beside("parallel")         # the found fusion graph beside a hand-made design
    viz.from_run("runs/search/seeds").stability()   # after `search --seeds ...`
    run.write_html("figures.html") # every figure, offline

From data: :func:`alpha_evolution`, :func:`operation_weights_evolution`, :func:`alpha_heatmap`
(history frames); :func:`fusion_diagram`, :func:`compare_diagrams` (genotypes, supernets, design
names); :func:`to_dot`, :func:`to_mermaid`; :func:`stability_figure`, :func:`results_figure`,
:func:`training_curves`; :func:`against_chance_figure` (teacher scores against chance);
:func:`write_html`.
"""

from .diagram import compare_diagrams, differences, fusion_diagram
from .export import diagram_html, html_page, to_dot, to_mermaid, write_html
from .history import alpha_evolution, alpha_heatmap, crossings, operation_weights_evolution
from .results import against_chance_figure, results_figure, stability_figure, training_curves
from .run import RunView, from_run
from .state import HAND_MADE, FusionState, from_history, hand_made, state_of

__all__ = [
    "HAND_MADE",
    "against_chance_figure",
    "FusionState",
    "RunView",
    "alpha_evolution",
    "alpha_heatmap",
    "compare_diagrams",
    "crossings",
    "diagram_html",
    "differences",
    "from_history",
    "from_run",
    "fusion_diagram",
    "hand_made",
    "html_page",
    "operation_weights_evolution",
    "results_figure",
    "stability_figure",
    "state_of",
    "to_dot",
    "to_mermaid",
    "training_curves",
    "write_html",
]
