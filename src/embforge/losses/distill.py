"""Distillation from a teacher's similarity distribution (in the spirit of Hinton et al., 2015, applied
to in-batch similarities as in RocketQAv2, Ren et al., 2021; AnglE's ``teacher_name_or_path``).

Inputs
    student_q (B, Ds), student_p (P, Ds): the student's embeddings of the rows and the candidates.
    teacher_q (B, Dt), teacher_p (P, Dt): the teacher's embeddings of the same texts (no gradient).
    temperature: cosine similarities are divided by it before the softmax over each row.

Returns the batch mean of ``KL(softmax(cos_teacher / T) || softmax(cos_student / T))``: each query
should spread its similarity over the batch as the teacher does. Distributions over texts, not
features, so the teacher may have a different width; with the starting model as its own teacher
(self-distillation) it keeps fine-tuning from forgetting what the model knew.
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F


# Defaults of the train flags of this term (the train Config also states them, as non-None defaults).
class Settings(TypedDict):
    distill_w: float
    distill_temperature: float


SETTINGS: Settings = {"distill_w": 1.0, "distill_temperature": 0.05}


def similarity_distillation(student_q: torch.Tensor, student_p: torch.Tensor, teacher_q: torch.Tensor,
                            teacher_p: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    s = F.normalize(student_q, dim=-1) @ F.normalize(student_p, dim=-1).T / temperature
    with torch.no_grad():
        t = F.normalize(teacher_q.to(s.dtype), dim=-1) @ F.normalize(teacher_p.to(s.dtype), dim=-1).T / temperature
    return F.kl_div(F.log_softmax(s, dim=-1), F.softmax(t, dim=-1), reduction="batchmean")
