"""The inference chain ``video = SR_h ∘ SR_l^t ∘ ↑F ∘ D^t ∘ P ∘ (x̂, C_x(x))`` (and text → image through P, D,
SR_l, SR_h): reading and checking the stages (:mod:`.stages`), the shapes flowing through them (:mod:`.plan`),
running them (:mod:`.run`), SR_h on video (:mod:`.sr_video`)."""

from mav_train.pipeline.sr_video import sr_high_on_video

__all__ = ["sr_high_on_video"]
