"""Serving the self-correcting model: an OpenAI-compatible API on Ray Serve, k attempts per request.

checkpoint.py: what to serve (a run directory or a Hugging Face directory); protocol.py: the request
bodies and errors; app.py: the attempts (the logic); streaming.py: the last attempt's tokens on their
way from the engine to the response; responses.py: OpenAI's response and stream shapes;
deployment.py: the Serve deployment and its HTTP routes; __main__.py: `python -m actors.serve`.
"""
