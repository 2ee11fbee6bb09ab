"""Data: the readers (AI Challenger and RETOUCH OCT, volume files, photos) and what they share (``data.common``: the
data errors, opening images, the check that no case is in two splits), the decode-once cache, slice datasets and the
synthetic generator."""
