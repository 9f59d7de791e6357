"""The contract between the coordinator and the firms: what a message carries and what a sum means.

Both sides import it, so it imports nothing of ours but the pure privacy core and the error tree: the
federation file's schema (`config`), message and query shapes, slot layouts, sufficient statistics and
seeds. Code that runs on one side only lives in `clients` (a firm) or `server` (the coordinator).
"""
