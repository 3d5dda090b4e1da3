"""WiNGPT2 triage chat for a hospital's patient-facing desk: a Gradio page that is a client of the Triton
deployment (through client/'s wingpt_client), never a model loaded in the UI process. Run `python -m ui`."""
