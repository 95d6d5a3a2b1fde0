"""Every loss against a plain transcription of the original code, values and gradients.

The reference functions below restate RepDistiller (HobbitLong/RepDistiller), mdistiller
(megvii-research/mdistiller) and the DML authors' code line by line, in their own
formulation (their eps, their reductions), not kdflow's; they share nothing with
kdflow/losses. Each comparison is on random float64 tensors, to 1e-5.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdflow.losses import build_method
from tests.losses.conftest import LAYOUTS, NUM_TRAIN, TRAIN_LABELS

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


# RepDistiller distiller_zoo/KD.py DistillKL (mdistiller distillers/KD.py is the same).
def distill_kl(y_s, y_t, T):
    p_s = F.log_softmax(y_s / T, dim=1)
    p_t = F.softmax(y_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * (T**2) / y_s.shape[0]


# mdistiller distillers/DKD.py dkd_loss.
def dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target.unsqueeze(1), 1).bool()
    other_mask = torch.ones_like(logits_student).scatter_(1, target.unsqueeze(1), 0).bool()
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)

    def cat_mask(t):
        return torch.cat(
            [(t * gt_mask).sum(1, keepdim=True), (t * other_mask).sum(1, keepdim=True)], dim=1
        )

    pred_student, pred_teacher = cat_mask(pred_student), cat_mask(pred_teacher)
    tckd = (
        F.kl_div(torch.log(pred_student), pred_teacher, reduction="sum")
        * temperature**2
        / target.shape[0]
    )
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = (
        F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
        * temperature**2
        / target.shape[0]
    )
    return alpha * tckd + beta * nckd


# RepDistiller models/util.py ConvReg (2-D only in the original).
class ConvReg(nn.Module):
    def __init__(self, s_shape, t_shape, use_relu=True):
        super().__init__()
        self.use_relu = use_relu
        s_N, s_C, s_H, s_W = s_shape
        t_N, t_C, t_H, t_W = t_shape
        if s_H == 2 * t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=3, stride=2, padding=1)
        elif s_H * 2 == t_H:
            self.conv = nn.ConvTranspose2d(s_C, t_C, kernel_size=4, stride=2, padding=1)
        elif s_H >= t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=(1 + s_H - t_H, 1 + s_W - t_W))
        else:
            raise NotImplementedError
        self.bn = nn.BatchNorm2d(t_C)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.conv(x)
        return self.relu(self.bn(x)) if self.use_relu else self.bn(x)


# RepDistiller distiller_zoo/AT.py Attention (p = 2).
def at_loss(f_s, f_t):
    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))

    def at(f):
        return F.normalize(f.pow(2).mean(1).view(f.size(0), -1))

    return (at(f_s) - at(f_t)).pow(2).mean()


# RepDistiller distiller_zoo/SP.py Similarity.similarity_loss.
def similarity_loss(f_s, f_t):
    bsz = f_s.shape[0]
    f_s = f_s.view(bsz, -1)
    f_t = f_t.view(bsz, -1)
    G_s = torch.nn.functional.normalize(torch.mm(f_s, torch.t(f_s)))
    G_t = torch.nn.functional.normalize(torch.mm(f_t, torch.t(f_t)))
    G_diff = G_t - G_s
    return (G_diff * G_diff).view(-1, 1).sum(0) / (bsz * bsz)


# RepDistiller distiller_zoo/RKD.py RKDLoss (w_d = 25, w_a = 50).
def pdist(e, eps=1e-12):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps).sqrt()
    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def rkd_loss(f_s, f_t, w_d=25, w_a=50):
    student = f_s.view(f_s.shape[0], -1)
    teacher = f_t.view(f_t.shape[0], -1)
    with torch.no_grad():
        t_d = pdist(teacher)
        t_d = t_d / t_d[t_d > 0].mean()
    d = pdist(student)
    d = d / d[d > 0].mean()
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = teacher.unsqueeze(0) - teacher.unsqueeze(1)
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)
    sd = student.unsqueeze(0) - student.unsqueeze(1)
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)
    loss_a = F.smooth_l1_loss(s_angle, t_angle)
    return w_d * loss_d + w_a * loss_a


# RepDistiller distiller_zoo/PKT.py PKT.cosine_similarity_loss.
def pkt_loss(output_net, target_net, eps=0.0000001):
    output_net = output_net / (torch.sqrt(torch.sum(output_net**2, dim=1, keepdim=True)) + eps)
    target_net = target_net / (torch.sqrt(torch.sum(target_net**2, dim=1, keepdim=True)) + eps)
    model_similarity = (torch.mm(output_net, output_net.transpose(0, 1)) + 1.0) / 2.0
    target_similarity = (torch.mm(target_net, target_net.transpose(0, 1)) + 1.0) / 2.0
    model_similarity = model_similarity / torch.sum(model_similarity, dim=1, keepdim=True)
    target_similarity = target_similarity / torch.sum(target_similarity, dim=1, keepdim=True)
    return torch.mean(
        target_similarity * torch.log((target_similarity + eps) / (model_similarity + eps))
    )


# RepDistiller crd/memory.py ContrastMemory.forward (memory update included) and
# crd/criterion.py ContrastLoss; v1 is the student embedding, v2 the teacher's.
def contrast_memory(memory_v1, memory_v2, v1, v2, y, idx, T=0.07, momentum=0.5):
    batch_size, k_plus_1 = idx.shape
    output_size, input_size = memory_v1.shape
    weight_v1 = torch.index_select(memory_v1, 0, idx.view(-1)).detach()
    weight_v1 = weight_v1.view(batch_size, k_plus_1, input_size)
    out_v2 = torch.exp(torch.div(torch.bmm(weight_v1, v2.view(batch_size, input_size, 1)), T))
    weight_v2 = torch.index_select(memory_v2, 0, idx.view(-1)).detach()
    weight_v2 = weight_v2.view(batch_size, k_plus_1, input_size)
    out_v1 = torch.exp(torch.div(torch.bmm(weight_v2, v1.view(batch_size, input_size, 1)), T))
    z_v1 = (out_v1.mean() * output_size).item()  # the first batch sets Z
    z_v2 = (out_v2.mean() * output_size).item()
    out_v1 = torch.div(out_v1, z_v1).contiguous()
    out_v2 = torch.div(out_v2, z_v2).contiguous()
    with torch.no_grad():
        l_pos = torch.index_select(memory_v1, 0, y.view(-1)) * momentum + v1 * (1 - momentum)
        memory_v1.index_copy_(0, y, l_pos.div(l_pos.pow(2).sum(1, keepdim=True).pow(0.5)))
        ab_pos = torch.index_select(memory_v2, 0, y.view(-1)) * momentum + v2 * (1 - momentum)
        memory_v2.index_copy_(0, y, ab_pos.div(ab_pos.pow(2).sum(1, keepdim=True).pow(0.5)))
    return out_v1, out_v2


def contrast_loss(x, n_data, eps=1e-7):
    bsz = x.shape[0]
    m = x.size(1) - 1
    Pn = 1 / float(n_data)
    P_pos = x.select(1, 0)
    log_D1 = torch.div(P_pos, P_pos.add(m * Pn + eps)).log()
    P_neg = x.narrow(1, 1, m)
    log_D0 = torch.div(P_neg.clone().fill_(m * Pn), P_neg.add(m * Pn + eps)).log()
    return -(log_D1.sum(0) + log_D0.view(-1, 1).sum(0)) / bsz


# YingZhangDUT/Deep-Mutual-Learning train_models.py kl_loss_compute: KL(p2 ‖ p1).
def kl_loss_compute(logits1, logits2):
    pred1 = F.softmax(logits1, dim=1)
    pred2 = F.softmax(logits2, dim=1)
    return torch.mean(torch.sum(pred2 * torch.log(1e-8 + pred2 / (pred1 + 1e-8)), 1))


def grads(loss, leaves):
    """Return d loss / d leaf for each leaf (None where it does not depend on it)."""
    return torch.autograd.grad(loss, leaves, retain_graph=True, allow_unused=True)


def assert_same(kdflow_loss, reference_loss, leaves) -> None:
    torch.testing.assert_close(kdflow_loss, reference_loss.reshape(()), **TOLERANCE)
    for ours, theirs in zip(grads(kdflow_loss, leaves), grads(reference_loss, leaves), strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            torch.testing.assert_close(ours, theirs, **TOLERANCE)


def build(name, layout, **overrides):
    student, teacher = layout
    method = build_method(name, student, teacher, NUM_TRAIN, train_labels=TRAIN_LABELS, **overrides)
    return method.double()


def test_kd_is_distill_kl_with_the_published_weights(layout, batch_factory) -> None:
    batch = batch_factory(*layout)
    z_s, z_t = batch.students[0].logits, batch.teacher.logits
    terms = build("kd", layout)(batch)
    reference = 0.1 * F.cross_entropy(z_s, batch.labels) + 0.9 * distill_kl(z_s, z_t, 4.0)
    assert_same(terms["ce"] + terms["kd"], reference, [z_s])


def test_dkd_is_mdistillers_dkd_loss(layout, batch_factory) -> None:
    batch = batch_factory(*layout, epoch=30)  # past the warm-up: mdistiller's weight 1
    z_s, z_t = batch.students[0].logits, batch.teacher.logits
    terms = build("dkd", layout)(batch)
    reference = F.cross_entropy(z_s, batch.labels) + dkd_loss(z_s, z_t, batch.labels, 1, 8, 4.0)
    assert_same(sum(terms.values()), reference, [z_s])


@pytest.mark.parametrize("epoch", [0, 4, 19])
def test_dkd_warmup_is_mdistillers(epoch: int, layout, batch_factory) -> None:
    batch = batch_factory(*layout, epoch=epoch)
    z_s, z_t = batch.students[0].logits, batch.teacher.logits
    terms = build("dkd", layout)(batch)
    mdistiller_epoch = epoch + 1  # mdistiller counts epochs from 1
    weight = min(mdistiller_epoch / 20, 1.0)
    reference = weight * dkd_loss(z_s, z_t, batch.labels, 1, 8, 4.0)
    assert_same(terms["tckd"] + terms["nckd"], reference, [z_s])


def test_fitnet_is_convreg_and_hint_loss(batch_factory) -> None:
    layout = LAYOUTS["2d"]
    method = build("fitnet", layout)
    batch = batch_factory(*layout)
    f_s = batch.students[0].features[1]  # hint stage: RepDistiller's hint_layer 2
    f_t = batch.teacher.features[1]
    reference_regressor = ConvReg((2, *f_s.shape[1:]), (2, *f_t.shape[1:])).double()
    conv, norm, _ = method.regressor
    reference_regressor.conv.load_state_dict(conv.state_dict())
    reference_regressor.bn.load_state_dict(norm.state_dict())
    terms = method(batch)
    reference = F.cross_entropy(batch.students[0].logits, batch.labels) + 100 * F.mse_loss(
        reference_regressor(f_s), f_t
    )
    assert_same(terms["ce"] + terms["fitnet"], reference, [batch.students[0].logits, f_s])


def test_at_is_repdistillers_attention(batch_factory) -> None:
    layout = LAYOUTS["2d"]
    batch = batch_factory(*layout)
    features_s, features_t = batch.students[0].features, batch.teacher.features
    terms = build("at", layout)(batch)
    reference = 1000 * sum(at_loss(s, t) for s, t in zip(features_s, features_t, strict=True))
    assert_same(terms["at"], reference, features_s)


def test_sp_is_repdistillers_similarity(layout, batch_factory) -> None:
    batch = batch_factory(*layout)
    f_s, f_t = batch.students[0].features[-1], batch.teacher.features[-1]
    terms = build("sp", layout)(batch)
    assert_same(terms["sp"], 3000 * similarity_loss(f_s, f_t), [f_s])


def test_rkd_is_repdistillers_rkd_loss(layout, batch_factory) -> None:
    batch = batch_factory(*layout)
    e_s, e_t = batch.students[0].embedding, batch.teacher.embedding
    terms = build("rkd", layout)(batch)
    assert_same(terms["rkd"], rkd_loss(e_s, e_t), [e_s])


def test_pkt_is_repdistillers_cosine_similarity_loss(layout, batch_factory) -> None:
    batch = batch_factory(*layout)
    e_s, e_t = batch.students[0].embedding, batch.teacher.embedding
    terms = build("pkt", layout, beta=1.0)
    assert_same(terms(batch)["pkt"], pkt_loss(e_s, e_t), [e_s])


def test_crd_is_repdistillers_contrast_memory_and_loss(layout, batch_factory) -> None:
    method = build("crd", layout, nce_k=30)
    memory_student = method.memory_student.clone()  # RepDistiller's memory_v1
    memory_teacher = method.memory_teacher.clone()  # memory_v2
    recorded = []
    sample = method.sample_contrast_indices

    def recording(indices):
        recorded.append(sample(indices))
        return recorded[-1]

    method.sample_contrast_indices = recording
    batch = batch_factory(*layout)
    e_s = batch.students[0].embedding
    loss = method(batch)["crd"]

    # RepDistiller's Embed: linear, then x / ‖x‖₂.
    def embed(linear, x):
        y = x.view(x.shape[0], -1) @ linear.weight.t() + linear.bias
        return y.div(y.pow(2).sum(1, keepdim=True).pow(0.5))

    v1 = embed(method.embed_student.linear, e_s)
    v2 = embed(method.embed_teacher.linear, batch.teacher.embedding)
    out_s, out_t = contrast_memory(
        memory_student, memory_teacher, v1, v2, batch.indices, recorded[0]
    )
    reference = 0.8 * (contrast_loss(out_s, NUM_TRAIN) + contrast_loss(out_t, NUM_TRAIN))
    assert_same(loss, reference, [e_s])
    torch.testing.assert_close(method.memory_student, memory_student, **TOLERANCE)
    torch.testing.assert_close(method.memory_teacher, memory_teacher, **TOLERANCE)


def test_dml_is_the_authors_kl_loss(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, None, num_students=2)
    z0, z1 = (peer.logits for peer in batch.students)
    terms = build_method("dml", student, None, NUM_TRAIN).double()(batch)
    # The authors' loss of net i is CE_i + Σ_{j≠i} kl_loss_compute(logits_i, logits_j); each
    # net's optimiser sees only its own loss's gradient, as kdflow's detached peers do.
    loss_0 = F.cross_entropy(z0, batch.labels) + kl_loss_compute(z0, z1.detach())
    loss_1 = F.cross_entropy(z1, batch.labels) + kl_loss_compute(z1, z0.detach())
    assert_same(terms["ce"] + terms["dml"], loss_0 + loss_1, [z0, z1])
