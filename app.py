"""The multilingual-kd demo: launch a distillation, compare similarities, see the spaces align.

Layout and wiring only. The handlers live in ``webapp/`` (one module per tab, plain functions
that tests call without a browser); the work is done by ``kd/`` (models, training, evaluation,
data) and ``viz/`` (projections, figures, metrics).

State:

- read-only models (teachers, untrained students) are loaded lazily, once, behind
  ``webapp.model_cache.get_encoder`` (an LRU cache keyed by model name), with their loading
  state shown in the status line;
- each visitor's distilled student, results and stop flag live in a ``webapp.session.Visitor``
  kept in ``gr.State`` (with a time to live), never in module globals;
- one training runs at a time per server (``concurrency_limit=1``); the other tabs stay usable.

Run ``python app.py``: it serves on 0.0.0.0 and the port in ``GRADIO_SERVER_PORT`` or ``PORT``
(7860 by default), as Hugging Face Spaces expect. At launch the default teacher and student load
in the background (``KD_PRELOAD``: other comma-separated ids, or empty for none) while UMAP
compiles. Visitors may name server folders only inside kd's cache and ``KD_MODEL_DIRS`` (models)
or ``../shared/data`` and ``KD_DATA_DIRS`` (Tatoeba folders), both ``:``-separated lists; see
``webapp/guards.py``.
"""

from __future__ import annotations

import logging
import os

import gradio as gr

from kd.langs import DEV_LANGS
from viz.figures import empty_figure
from webapp.aligned import aligned_space, tatoeba_box
from webapp.aligned import limits_note as draw_limits
from webapp.analyse import SPACE_CHOICES, analyse, pick_row, show_errors
from webapp.analyse import limits_note as analyse_limits
from webapp.compare import compare, default_compare_text, refresh_compare
from webapp.distill import prepare_run, queued_message, request_stop, run_distillation
from webapp.distill_form import (
    APP_DEFAULTS,
    FORM_FIELDS,
    control,
    default_source_name,
    frozen_layers_high,
    frozen_layers_slider,
    lang_label,
    language_update,
)
from webapp.distill_form import limits_note as run_limits
from webapp.guards import launch_options, tatoeba_folders, trust_no_forwarded_header
from webapp.mining import (
    EXAMPLE_SRC,
    EXAMPLE_TGT,
    mine_lists,
    miner_choices,
    miner_threshold,
)
from webapp.mining import RESULT_COLUMNS as MINE_COLUMNS
from webapp.mining import limits_note as mine_limits
from webapp.model_cache import server_status, start_background_warm_up, status_tick
from webapp.prebuilt import prebuilt_dir, prebuilt_note
from webapp.report import student_report
from webapp.run_results import RESULT_COLUMNS
from webapp.search import ALL_LANGS, collection_langs, example_queries, search_tables
from webapp.search import MAX_K as SEARCH_MAX_K
from webapp.search import RESULT_COLUMNS as SEARCH_COLUMNS
from webapp.session import (
    Visitor,
    end_session,
    forget_visitor,
    refuse_wrong_types,
    register_session,
)
from webapp.settings import (
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    LEARN_FILE,
    MODEL_LABELS,
    SOURCES,
    STUDENT_CHOICES,
    TEACHER_CHOICES,
    VISITOR_TTL_S,
)
from webapp.student_zip import load_student_zip

INTRO = (
    "# Multilingual knowledge distillation\n"
    "An English **teacher** model knows which English sentences mean the same thing. Here a "
    "multilingual **student** learns to put every translation where the teacher puts the "
    "English sentence (Reimers & Gurevych, 2020). Distil one, then compare sentences in your "
    "own languages and watch the spaces align. The *Learn* tab explains the method."
)


def build_demo() -> gr.Blocks:
    """The app's page: models row, then the Distill, Compare, Aligned spaces and Learn tabs.

    Loads no model and starts no thread: that happens on first use and in :func:`main`.
    """
    # Uploads (up to MAX_STUDENT_ZIP_BYTES each) and served zips leave the disk with the visitor.
    with gr.Blocks(
        title="Multilingual knowledge distillation", delete_cache=(3600, VISITOR_TTL_S)
    ) as demo:
        visitor = gr.State(Visitor(), time_to_live=VISITOR_TTL_S, delete_callback=forget_visitor)
        gr.Markdown(INTRO)
        status = gr.Markdown("**Status** · starting…", elem_id="server-status")
        if prebuilt_dir() is not None:  # the good student on screen before anyone trains
            gr.Markdown(prebuilt_note(), elem_id="prebuilt-note")
        with gr.Row():
            teacher = gr.Dropdown(
                TEACHER_CHOICES,
                value=DEFAULT_TEACHER,
                allow_custom_value=True,
                label="teacher (English)",
                info="an offline model, or type a local folder or Hugging Face id",
            )
            student = gr.Dropdown(
                STUDENT_CHOICES,
                value=DEFAULT_STUDENT,
                allow_custom_value=True,
                label="student (multilingual)",
                info="default: a 4-bit-derived copy of multilingual-e5-small",
            )

        # With a pre-built student the page opens on Compare, already drawn (see demo.load).
        with gr.Tabs(selected="compare" if prebuilt_dir() is not None else None):
            with gr.Tab("Distill", id="distill"), gr.Row():
                with gr.Column(scale=1, min_width=320):
                    langs = gr.CheckboxGroup(
                        [(lang_label(c, None), c) for c in DEV_LANGS],
                        value=APP_DEFAULTS.langs,
                        label=f"languages (training pairs: {default_source_name()})",
                        elem_id="distill-langs",
                    )
                    more_langs = gr.Dropdown(
                        [],
                        value=[],
                        multiselect=True,
                        # An API call has no page to fill the choices in: the handler checks
                        # each code instead (webapp.distill_form.make_config).
                        allow_custom_value=True,
                        label="more languages",
                        info="every language with at least 200 pairs here; type to search",
                        elem_id="more-langs",
                    )
                    # Labels, ranges and defaults: kd.config.TrainConfig (the "app" preset).
                    max_pairs = control("max_pairs", step=10)
                    english_rows = control("english_rows", step=100)
                    with gr.Row():
                        epochs = control("epochs")
                        batch_size = control("batch_size")
                    with gr.Row():
                        lr = control("lr")
                        loss = control("loss")
                    with gr.Accordion("advanced", open=False):
                        eval_pairs = control("eval_pairs", step=10)
                        evals = control("evals")
                        freeze_layers = control(
                            "freeze_layers", high=frozen_layers_high(DEFAULT_STUDENT)
                        )
                        head = control(
                            "head",
                            info="ridge: fitted to the teacher's vectors before step 0, where "
                            "the curve jumps (cross-model 0.02 -> 0.97 here); plain: gradient "
                            "descent makes the whole journey (0.82 after 1 epoch, 0.98 after 5)",
                        )
                        own_pairs = gr.File(
                            label="your own pairs (optional): .tsv with a first line "
                            "en<TAB>xx, then english<TAB>translation",
                            file_types=[".tsv", ".txt", ".jsonl"],
                            type="filepath",
                            elem_id="own-pairs",
                        )
                    student.change(
                        frozen_layers_slider,
                        [student, freeze_layers, visitor],
                        freeze_layers,
                        show_progress="hidden",
                        api_visibility="private",
                    )
                    with gr.Row():
                        start = gr.Button("Start distillation", variant="primary", elem_id="start")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    gr.Markdown(run_limits(), elem_id="run-limits")
                with gr.Column(scale=2):
                    run_status = gr.Markdown(
                        "Pick languages and press Start.", elem_id="run-status"
                    )
                    curve = gr.Plot(label="loss and dev accuracy", elem_id="curve")
                    results = gr.Dataframe(
                        label="before / after, on the held-out pairs (retrieval: each "
                        "translation ranks all the held-out English sentences of its language, "
                        "'held-out pairs per language' of them)",
                        headers=["language", "model", *RESULT_COLUMNS.values()],
                        interactive=False,
                        elem_id="results",
                    )
                    bars = gr.Plot(label="cross-model retrieval per language")
                    journey = gr.Plot(
                        label="watch it happen: held-out translations travel to the teacher's "
                        "English points (slider: one frame per evaluation)",
                        elem_id="journey",
                    )
                    download = gr.File(
                        label="the distilled student (a delta zip; kd export makes the full model)",
                        interactive=False,
                        elem_id="download",
                    )
                    with gr.Row():
                        report_btn = gr.Button(
                            "Report on your student (one HTML page)", elem_id="report-btn"
                        )
                        report_file = gr.File(
                            label="the report: retrieval, STS, fidelity, collapse, verdicts",
                            interactive=False,
                            elem_id="report",
                        )
                    student_zip = gr.File(
                        label="or bring back a student you downloaded earlier (its zip)",
                        file_types=[".zip"],
                        type="filepath",
                        elem_id="student-zip",
                    )

            with gr.Tab("Compare", id="compare"):
                gr.Markdown(
                    "One sentence per line, in any languages. Each model's cosine similarity "
                    "between every two sentences: the teacher, the untrained student, the "
                    "pre-built distilled student, and yours once you have one. The closest pairs "
                    "are ranked by the last model shown."
                )
                text = gr.Textbox(
                    default_compare_text(),
                    lines=12,
                    max_lines=40,
                    label="sentences",
                    elem_id="compare-text",
                )
                compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
                heatmaps = gr.Plot(
                    empty_figure(
                        "the heatmaps follow once the models are loaded (on a fresh server about "
                        "20 s; the status line above says where it stands)"
                    ),
                    label="cosine similarity",
                    elem_id="heatmaps",
                )
                pairs = gr.Dataframe(
                    label="closest pairs of different sentences",
                    headers=["rank", "sentence A", "sentence B", "cos (teacher)"],
                    interactive=False,
                    elem_id="pairs",
                )

            with gr.Tab("Aligned spaces", id="aligned"):
                gr.Markdown(
                    "Teacher and student vectors of the same sentences, projected by **one** "
                    "fit so that they share coordinates. Grey lines join each translation to "
                    "its English sentence: short lines mean aligned spaces."
                )
                # The Tatoeba option only where this server has such a folder (else a dead end).
                tatoeba = tatoeba_folders()
                with gr.Row():
                    source = gr.Radio(
                        [x for x in SOURCES if tatoeba or x != SOURCES[1]],
                        value=SOURCES[0],
                        label="sentences",
                        elem_id="aligned-source",
                    )
                    tatoeba_dir = gr.Textbox(
                        tatoeba[0] if tatoeba else "",
                        label="Tatoeba folder (tatoeba.XXX-eng.XXX files)",
                        info=("on this server: " + ", ".join(tatoeba[:3])) if tatoeba else None,
                        visible=False,  # shown while the Tatoeba source is picked (below)
                        elem_id="tatoeba-dir",
                    )
                    source.change(
                        tatoeba_box,
                        source,
                        tatoeba_dir,
                        show_progress="hidden",
                        api_visibility="private",
                    )
                    upload = gr.File(
                        label="or upload a .tsv (en<TAB>xx header)",
                        file_types=[".tsv", ".txt", ".jsonl"],
                        type="filepath",
                    )
                with gr.Row():
                    aligned_langs = gr.Textbox(
                        "de,fr,es,ru,ja,zh,ar,hi",
                        label="languages (comma-separated codes)",
                        elem_id="aligned-langs",
                    )
                    per_lang = gr.Slider(
                        2,
                        500,
                        value=16,
                        step=1,
                        label="sentences per language",
                        info=f"one Draw: {draw_limits()}",
                        elem_id="aligned-per-lang",
                    )
                    method = gr.Radio(["pca", "umap"], value="pca", label="projection")
                    which = gr.CheckboxGroup(
                        [(label, key) for key, label in MODEL_LABELS.items()],
                        value=list(MODEL_LABELS),
                        label="models",
                    )
                draw = gr.Button("Draw", variant="primary", elem_id="draw")
                space = gr.Plot(
                    label="the teacher's space: does each translation land on its English "
                    "sentence? (slider: the students, untrained / pre-built / distilled)",
                    elem_id="teacher-space",
                )
                numbers = gr.Markdown(elem_id="numbers")
                scatter = gr.Plot(label="each model's own space, one fit", elem_id="scatter")
                cosines = gr.Dataframe(
                    label="mean translation cosine per language, within each model",
                    headers=["lang", "teacher", "student, untrained"],
                    interactive=False,
                )

            with gr.Tab("Search", id="search"):
                gr.Markdown(
                    "A query in any language against the demo collection: 381 sentences in 12 "
                    "languages, indexed once per model in an SQLite file (`kd index` builds the "
                    "same from your own files). Your distilled student searches the **teacher's** "
                    "index: distilling put it in the teacher's space."
                )
                with gr.Row():
                    query = gr.Textbox(
                        example_queries()[0],
                        label="query",
                        scale=3,
                        elem_id="search-query",
                    )
                    search_lang = gr.Dropdown(
                        [ALL_LANGS, *collection_langs()],
                        value=ALL_LANGS,
                        label="find sentences in",
                        scale=1,
                    )
                    top_k = gr.Slider(1, SEARCH_MAX_K, value=5, step=1, label="results per model")
                gr.Examples([[q] for q in example_queries()], inputs=[query], label="try")
                search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
                search_notes = gr.Markdown(elem_id="search-notes")
                # Two tables a row: four side by side cut their headers and wrap their scores.
                hits = []
                keys = list(MODEL_LABELS.items())
                for first in range(0, len(keys), 2):
                    with gr.Row():
                        hits += [
                            gr.Dataframe(
                                label=label,
                                headers=SEARCH_COLUMNS,
                                column_widths=["8%", "11%", "9%", "60%", "12%"],
                                interactive=False,
                                wrap=True,
                                max_height=800,  # every row of up to 20, none clipped
                                # Shown once they have results (webapp.search.search_tables).
                                visible=key != "distilled"
                                and (key != "prebuilt" or prebuilt_dir() is not None),
                                elem_id=f"hits-{key}",
                            )
                            for key, label in keys[first : first + 2]
                        ]

            with gr.Tab("Analyse", id="analyse"):
                gr.Markdown(
                    "Held-out pairs read two ways. **Errors**: the pairs each model retrieves "
                    "wrongly, what it ranked first instead, and the pairs distillation fixed and "
                    "broke. **Language bias**: every translation against one pool mixing all "
                    "languages (Reimers & Gurevych 2020, after LAReQA): is its nearest "
                    "neighbour its translation, or any sentence in its own language?"
                )
                with gr.Row():
                    an_source = gr.Radio(
                        [x for x in SOURCES if tatoeba or x != SOURCES[1]],
                        value=SOURCES[1] if tatoeba else SOURCES[0],
                        label="pairs",
                        elem_id="analyse-source",
                    )
                    an_dir = gr.Textbox(
                        tatoeba[0] if tatoeba else "",
                        label="Tatoeba folder (tatoeba.XXX-eng.XXX files)",
                        visible=bool(tatoeba),
                        elem_id="analyse-dir",
                    )
                    an_source.change(
                        tatoeba_box,
                        an_source,
                        an_dir,
                        show_progress="hidden",
                        api_visibility="private",
                    )
                    an_upload = gr.File(
                        label="or upload a .tsv (en<TAB>xx header)",
                        file_types=[".tsv", ".txt", ".jsonl"],
                        type="filepath",
                    )
                with gr.Row():
                    an_langs = gr.Textbox(
                        "de,fr,es,ru,ja,zh,ar,tr",  # in the built-in set and Tatoeba's dev set
                        label="languages (comma-separated codes)",
                        elem_id="analyse-langs",
                    )
                    an_per_lang = gr.Slider(
                        2,
                        500,
                        value=100,
                        step=1,
                        label="pairs per language (the first ones)",
                        info=f"one analysis: {analyse_limits()}",
                        elem_id="analyse-per-lang",
                    )
                    an_space = gr.Radio(
                        SPACE_CHOICES, value="cross", label="retrieval for the errors"
                    )
                analyse_btn = gr.Button("Analyse", variant="primary", elem_id="analyse-btn")
                an_summary = gr.Markdown(elem_id="analyse-summary")
                an_errors = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=1):
                        an_accuracy = gr.Dataframe(
                            label="retrieval accuracy per language (click a row)",
                            interactive=False,
                            elem_id="analyse-accuracy",
                        )
                        an_lang = gr.Dropdown([], label="language", elem_id="analyse-lang")
                    with gr.Column(scale=2):
                        an_failures = gr.Markdown(elem_id="analyse-errors")
                an_bias_plot = gr.Plot(
                    label="language bias: nearest neighbour in one pool mixing every language "
                    "(diamond: accuracy in the language's own pool)",
                    elem_id="analyse-bias",
                )
                an_bias = gr.Dataframe(
                    label="language bias per language and model (drop = per-language - mixed)",
                    interactive=False,
                    elem_id="analyse-bias-table",
                )

            with gr.Tab("Mine", id="mine"):
                gr.Markdown(
                    "Two lists that are not aligned, in any languages: which sentence of one "
                    "translates which of the other? Each pair's **margin** is its cosine over "
                    "how close each side already is to its nearest neighbours in the other list "
                    "(Artetxe & Schwenk, 2019); pairs above the least margin are kept, best first, "
                    f"each sentence used once (`kd mine` does the same). One Mine: {mine_limits()}."
                )
                with gr.Row():
                    with gr.Column():
                        mine_src = gr.Textbox(
                            EXAMPLE_SRC, lines=8, label="source list, one sentence a line"
                        )
                        mine_src_file = gr.File(
                            label="or upload it (.txt, UTF-8)", file_types=[".txt"], type="filepath"
                        )
                    with gr.Column():
                        mine_tgt = gr.Textbox(
                            EXAMPLE_TGT, lines=8, label="target list, one sentence a line"
                        )
                        mine_tgt_file = gr.File(
                            label="or upload it (.txt, UTF-8)", file_types=[".txt"], type="filepath"
                        )
                with gr.Row():
                    miners = miner_choices()
                    mine_model = gr.Radio(miners, value=miners[0][1], label="model that embeds")
                    mine_threshold = gr.Slider(
                        1.0,
                        1.5,
                        value=miner_threshold(miners[0][1], DEFAULT_STUDENT),
                        step=0.005,
                        label="least margin",
                        info="set to the model's own (each model's margins have their own "
                        "scale; docs/mining.md)",
                    )
                    mine_model.change(
                        miner_threshold,
                        [mine_model, student],
                        mine_threshold,
                        show_progress="hidden",
                        api_visibility="private",
                    )
                mine_btn = gr.Button("Mine", variant="primary", elem_id="mine-btn")
                mine_notes = gr.Markdown(elem_id="mine-notes")
                mined = gr.Dataframe(
                    label="mined pairs, best margin first",
                    headers=MINE_COLUMNS,
                    column_widths=["8%", "10%", "41%", "41%"],
                    interactive=False,
                    wrap=True,
                    elem_id="mined",
                )
                mine_btn.click(
                    mine_lists,
                    [
                        mine_src,
                        mine_tgt,
                        mine_src_file,
                        mine_tgt_file,
                        mine_model,
                        mine_threshold,
                        student,
                        visitor,
                    ],
                    [mine_notes, mined],
                    concurrency_limit=2,
                    api_name="mine",
                )

            with gr.Tab("Learn", id="learn"):
                gr.Markdown(
                    LEARN_FILE.read_text(encoding="utf-8"),
                    latex_delimiters=[
                        {"left": "$$", "right": "$$", "display": True},
                        {"left": "$", "right": "$", "display": False},
                    ],
                )

        controls = {
            "teacher": teacher,
            "student": student,
            "langs": langs,
            "more_langs": more_langs,
            "max_pairs": max_pairs,
            "english_rows": english_rows,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "loss": loss,
            "eval_pairs": eval_pairs,
            "evals": evals,
            "freeze_layers": freeze_layers,
            "head": head,
            "own_pairs": own_pairs,
        }
        form = [controls[name] for name in FORM_FIELDS]  # the order the handlers read
        start.click(
            prepare_run,
            [*form, visitor],
            visitor,  # no visible output: a refused form is a toast, not a badge on a message
            concurrency_limit=None,
            api_name="prepare_run",
        ).success(
            queued_message, None, run_status, show_progress="hidden", api_visibility="private"
        ).success(  # the status line says the run is coming at once, not at the next tick
            server_status, visitor, status, show_progress="hidden", api_visibility="private"
        ).success(
            run_distillation,
            [*form, visitor],
            [run_status, curve, results, bars, download, journey, visitor],
            concurrency_limit=1,
            concurrency_id="training",
            api_name="distill",
            show_progress_on=[run_status],
        ).then(  # the status line says "idle" at once, not at the next slow tick
            server_status, visitor, status, show_progress="hidden", api_visibility="private"
        ).then(  # Compare shows the new student without being pressed again
            refresh_compare,
            [text, teacher, student, visitor],
            [heatmaps, pairs],
            concurrency_limit=4,
            api_visibility="private",
        )
        stop.click(request_stop, visitor, run_status, concurrency_limit=None, api_name="stop")
        report_btn.click(
            student_report,
            visitor,
            report_file,
            concurrency_limit=1,
            concurrency_id="report",
            api_name="report",
        )
        student_zip.upload(
            load_student_zip,
            [student_zip, visitor],
            [run_status, visitor],
            concurrency_limit=1,
            concurrency_id="student-zip",
            api_name="load_student",
            show_progress="hidden",  # a refused zip is a toast, not a badge over the message
        )
        compare_btn.click(
            compare,
            [text, teacher, student, visitor],
            [heatmaps, pairs],
            concurrency_limit=4,
            api_name="compare",
        )
        draw.click(
            aligned_space,
            [
                source,
                tatoeba_dir,
                upload,
                aligned_langs,
                per_lang,
                method,
                which,
                teacher,
                student,
                visitor,
            ],
            [scatter, numbers, cosines, space],
            concurrency_limit=2,
            api_name="aligned",
        )

        gr.on(
            [search_btn.click, query.submit],
            search_tables,
            [query, top_k, search_lang, teacher, student, visitor],
            [search_notes, *hits],
            concurrency_limit=4,
            api_name="search",
        )

        analyse_btn.click(
            analyse,
            [
                an_source,
                an_dir,
                an_upload,
                an_langs,
                an_per_lang,
                an_space,
                teacher,
                student,
                visitor,
            ],
            [an_summary, an_accuracy, an_lang, an_errors, an_failures, an_bias_plot, an_bias],
            concurrency_limit=2,
            api_name="analyse",
        )
        an_lang.change(show_errors, [an_errors, an_lang], an_failures, api_visibility="private")
        an_accuracy.select(pick_row, an_errors, an_lang, api_visibility="private")

        timer = gr.Timer(2)
        timer.tick(  # the shared models and this visitor's own, never other visitors' names
            status_tick,
            visitor,
            [status, timer],
            show_progress="hidden",
            concurrency_limit=None,
            api_visibility="private",
        )
        demo.load(server_status, visitor, status, api_visibility="private")
        # The visitor's files go when they close the page, not an hour later (gradio keeps a
        # closed page's state that long): load records the session, unload deletes.
        demo.load(register_session, visitor, None, api_visibility="private")
        demo.unload(end_session)
        demo.load(language_update, None, [langs, more_langs], api_visibility="private")
        demo.load(  # the first page shows Compare's heatmaps (the pre-built student's too)
            compare, [text, teacher, student, visitor], [heatmaps, pairs], api_visibility="private"
        )
    refuse_wrong_types(demo)  # an API value of the wrong type: one line, no traceback
    demo.queue(max_size=64)
    return demo


def main() -> None:
    """``python app.py``: warm up in the background and serve on the host and port Spaces set."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    preload = os.environ.get("KD_PRELOAD")  # comma-separated model ids; "" loads none early
    start_background_warm_up(None if preload is None else [m for m in preload.split(",") if m])
    trust_no_forwarded_header()  # client addresses: the connection's, or the app's proxy rule
    port = int(os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or 7860)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=port,
        **launch_options(),  # the upload cap, and kd's folders blocked from file serving
    )


demo = build_demo()

if __name__ == "__main__":
    main()
