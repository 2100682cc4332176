"""The page of ``bench serve``: draw a digit, see what every method of the run predicts, give the true digit, flag.

``Oracle`` is the page's logic without any web code (preprocess, predict with every served method, store a flagged
example): the tests call it directly. ``build_ui`` wraps it in a Gradio Blocks app. The drawing canvas is a plain
HTML ``<canvas>`` (white ink on black); the Predict and Flag buttons read it as a PNG data URL in the browser and
send that text, never a file path, to the server.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.dadc.preprocess import decode_data_url, decode_image, to_mnist, to_png
from bench.dadc.rounds import Served
from bench.dadc.store import DadcStore, ModelPrediction, check_label
from bench.errors import DataError

CANVAS = 280  # canvas pixels a side (10x MNIST)
STROKE = 18
RAW_SIDE = 112  # the drawing is stored downscaled to this size, next to the 28x28 image
PRED_HEADERS = ["method", "round", "predicted", "confidence", "model"]
STATS_HEADERS = ["method", "round", "flagged", "fooled", "fooled %"]


class Oracle:
    """The served methods of a run and its collection; thread-safe (predictions run one at a time, because
    stochastic methods fork the global RNG)."""

    def __init__(self, run_dir: str | Path, served: list[Served]):
        self.run_dir = Path(run_dir)
        self.served = served
        self.store = DadcStore(run_dir)
        self._lock = threading.Lock()

    def classify(self, data: str | bytes) -> tuple[np.ndarray, np.ndarray, list[ModelPrediction]]:
        """(28x28 image in [0, 1], the decoded drawing, each method's prediction) of a data URL or image bytes."""
        raw = decode_data_url(data) if isinstance(data, str) else data
        grey = decode_image(raw)
        img = to_mnist(grey)
        x = torch.from_numpy(to_uint8(img)).reshape(1, 1, 28, 28)  # exactly what is stored (8-bit PNG)
        out = []
        with self._lock:
            for s in self.served:
                pred = s.model.predict(x)
                out.append(ModelPrediction(s.method, s.seed, s.fold, s.round, s.model_key,
                                           int(pred.probs[0].argmax()), float(pred.confidence[0])))
        return img, grey, out

    def flag(self, data: str | bytes, label: Any) -> tuple[int, np.ndarray, list[ModelPrediction]]:
        """Predict again (so the stored predictions are those of the stored image) and store the example."""
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError("choose the true digit (0-9) before flagging")
        label = check_label(label)
        img, grey, preds = self.classify(data)
        ex_id = self.store.add_example(to_png(img), label, preds, canvas_png=downscaled_png(grey))
        return ex_id, img, preds

    def stats(self) -> list[list[Any]]:
        return [[f["method"], f["round"], f["flagged"], f["fooled"], f"{100 * f['fooled'] / f['flagged']:.1f}"]
                for f in self.store.fooled()]


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def downscaled_png(grey: np.ndarray) -> bytes:
    from PIL import Image

    im = Image.fromarray(to_uint8(grey))
    im.thumbnail((RAW_SIDE, RAW_SIDE), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def pred_rows(preds: list[ModelPrediction]) -> list[list[Any]]:
    return [[p.method, p.round, p.predicted, round(p.confidence, 4), p.model_key] for p in preds]


def enlarged(img: np.ndarray, factor: int = 5) -> np.ndarray:
    """Nearest-neighbour enlargement of the 28x28 image, for display."""
    return np.kron(to_uint8(img), np.ones((factor, factor), dtype=np.uint8))


_CANVAS_HTML = f"""
<div id="dadc-pad">
  <canvas id="dadc-canvas" width="{CANVAS}" height="{CANVAS}"></canvas>
  <div><button id="dadc-clear" type="button">Clear</button></div>
</div>
"""

_CANVAS_JS = f"""
const c = element.querySelector('#dadc-canvas');
const g = c.getContext('2d');
let down = false;
function clearPad() {{ g.fillStyle = 'black'; g.fillRect(0, 0, c.width, c.height); window.dadcDrawn = false; }}
function pos(e) {{ const r = c.getBoundingClientRect();
  return [(e.clientX - r.left) * c.width / r.width, (e.clientY - r.top) * c.height / r.height]; }}
clearPad();
c.addEventListener('pointerdown', e => {{
  down = true; c.setPointerCapture(e.pointerId);
  g.strokeStyle = 'white'; g.lineWidth = {STROKE}; g.lineCap = 'round'; g.lineJoin = 'round';
  const [x, y] = pos(e); g.beginPath(); g.moveTo(x, y); g.lineTo(x + 0.01, y); g.stroke();
  window.dadcDrawn = true; e.preventDefault(); }});
c.addEventListener('pointermove', e => {{ if (!down) return; const [x, y] = pos(e); g.lineTo(x, y); g.stroke();
  e.preventDefault(); }});
['pointerup', 'pointercancel'].forEach(t => c.addEventListener(t, () => {{ down = false; }}));
element.querySelector('#dadc-clear').addEventListener('click', clearPad);
window.dadcCanvasData = () => (window.dadcDrawn ? c.toDataURL('image/png') : '');
"""

_CSS = """
#dadc-canvas { width: 280px; height: 280px; touch-action: none; cursor: crosshair; border: 1px solid #888;
               border-radius: 4px; background: black; }
#dadc-clear { margin-top: 6px; padding: 2px 12px; border: 1px solid #888; border-radius: 4px; }
"""


def build_ui(oracle: Oracle):
    """The Gradio Blocks app (gradio is imported here, not at module import)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    names = ", ".join(f"{s.method} (round {s.round})" for s in oracle.served)

    def on_predict(data: str):
        try:
            img, _, preds = oracle.classify(data)
        except DataError as e:
            return None, [], f"**Cannot read the drawing:** {e}"
        return enlarged(img), pred_rows(preds), "Predicted. If a method is wrong, choose the true digit and flag it."

    def on_flag(data: str, label: Any):
        try:
            ex_id, img, preds = oracle.flag(data, label)
        except DataError as e:
            return gr.skip(), gr.skip(), f"**Not flagged:** {e}", oracle.stats()
        truth = check_label(label)
        wrong = [p.method for p in preds if p.predicted != truth]
        verdict = f"fooled {', '.join(wrong)}" if wrong else "no method was fooled"
        return (enlarged(img), pred_rows(preds),
                f"Saved example #{ex_id} (true digit {truth}): {verdict}.", oracle.stats())

    with gr.Blocks(title="bench: fool the models", analytics_enabled=False) as demo:
        gr.Markdown(f"## Draw a digit that fools the models\nRun `{oracle.run_dir}`; serving {names}. Draw with "
                    "the mouse (or a finger), press **Predict**, then give the true digit and **Flag** the example.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                gr.HTML(_CANVAS_HTML, js_on_load=_CANVAS_JS, elem_id="dadc-pad-block")
                drawing = gr.Textbox(visible=False, elem_id="dadc-data")
                predict_btn = gr.Button("Predict", variant="primary", elem_id="dadc-predict")
            with gr.Column(scale=1, min_width=200):
                shown = gr.Image(label="what the models see (28x28, enlarged)", type="numpy", interactive=False,
                                 height=160, buttons=["download"], elem_id="dadc-processed")
            with gr.Column(scale=2):
                table = gr.Dataframe(headers=PRED_HEADERS, label="predictions", interactive=False,
                                     elem_id="dadc-predictions")
                label = gr.Radio([str(i) for i in range(10)], label="true digit", elem_id="dadc-label")
                flag_btn = gr.Button("Flag this example", variant="stop", elem_id="dadc-flag")
        status = gr.Markdown("Draw a digit to start.", elem_id="dadc-status")
        stats = gr.Dataframe(headers=STATS_HEADERS, label="how often people fooled each method",
                             interactive=False, elem_id="dadc-stats")
        read_canvas = "(d, ...rest) => [window.dadcCanvasData ? window.dadcCanvasData() : '', ...rest]"
        predict_btn.click(on_predict, [drawing], [shown, table, status], js=read_canvas, api_name="predict")
        flag_btn.click(on_flag, [drawing, label], [shown, table, status, stats], js=read_canvas, api_name="flag")
        demo.load(oracle.stats, None, stats)
    return demo


def theme_and_css():
    """System fonts only: the page makes no request outside the server."""
    import gradio as gr

    fonts = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=fonts, font_mono=["ui-monospace", "monospace"]), _CSS


def launch(oracle: Oracle, port: int, block: bool = True):
    """Serve on 127.0.0.1:port (no share link, no analytics, no server-side rendering)."""
    demo = build_ui(oracle)
    theme, css = theme_and_css()
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=port, share=False, ssr_mode=False, mcp_server=False, pwa=False,
                run_history=False, theme=theme, css=css, quiet=True, prevent_thread_lock=not block, inbrowser=False,
                show_error=False)
    return demo
