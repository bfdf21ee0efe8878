"""Judging generated samples: the toy-world judge (``toy_judge``)."""
