"""An OpenAI-compatible chat-completions endpoint in front of the Triton deployment (`python -m openai_api`).

A client of Triton through `wingpt_client.AsyncWingptClient` over one gRPC channel: it has no model of
its own, so the server's template, triage, cancellation and overload behaviour hold for every OpenAI client.
"""
