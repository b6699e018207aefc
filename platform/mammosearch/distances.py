"""The distance metrics the product indexes, searches and evaluates with, named once.

l2: squared Euclidean distance of the raw embeddings; cosine: inner product of the
L2-normalised embeddings. The first is the order reports and settings list them in.
"""

DISTANCE_METRICS: tuple[str, ...] = ("l2", "cosine")
