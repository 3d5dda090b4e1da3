"""The orchestrator: what the public model `ensemble` does for one request, from arrival to its last
response (read the request, triage, call the engine under an id of its own, detokenize, cancel).
The Triton glue is model_repository/ensemble/1/model.py; the logic it needs lives here."""
