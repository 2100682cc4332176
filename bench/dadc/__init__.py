"""Dynamic adversarial data collection: a web page where people draw digits to fool the run's models
(``bench serve``), the collected examples as the ``dadc:RUN`` eval set, and fine-tuning rounds
(``bench dadc retrain``). Importing this package does not import gradio; only ``bench.dadc.app.build_ui`` does."""
