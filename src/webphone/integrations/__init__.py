"""Adapters between webphone and other frameworks; each needs its extra (`webphone[pipecat]`).

Nothing here is imported by `import webphone`.
"""
