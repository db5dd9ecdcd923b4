"""im2col / col2im (cpu backend). Spec: ``kernels.reference``.

Both parallelize over (image, channel) pairs: each pair owns kh*kw rows of
the column matrix and one channel plane of the image, so col2im's
accumulation of overlapping windows needs no atomics and has a fixed order.
"""

from numba import njit, prange

from . import args
from .wrap import contig, finish, out_buffer


@njit(parallel=True, cache=True)
def _im2col(x, kh, kw, stride, padding, h_out, w_out, out):
    B, C, H, W = x.shape
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        for i in range(kh):
            for j in range(kw):
                row = out[b, (c * kh + i) * kw + j]  # (h_out * w_out,)
                for oh in range(h_out):
                    ih = oh * stride - padding + i
                    for ow in range(w_out):
                        iw = ow * stride - padding + j
                        if 0 <= ih < H and 0 <= iw < W:
                            row[oh * w_out + ow] = x[b, c, ih, iw]
                        else:
                            row[oh * w_out + ow] = 0
    return out


@njit(parallel=True, cache=True)
def _col2im(cols, kh, kw, stride, padding, h_out, w_out, out):
    B, C, H, W = out.shape
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        plane = out[b, c]  # (H, W)
        plane[:] = 0
        for i in range(kh):
            for j in range(kw):
                row = cols[b, (c * kh + i) * kw + j]
                for oh in range(h_out):
                    ih = oh * stride - padding + i
                    if 0 <= ih < H:
                        for ow in range(w_out):
                            iw = ow * stride - padding + j
                            if 0 <= iw < W:
                                plane[ih, iw] += row[oh * w_out + ow]
    return out


def im2col(x, kh, kw, stride, padding, out):
    """out (B, C*kh*kw, H_out*W_out): zero-padded patch columns of x (B, C, H, W)."""
    kh, kw, stride, padding, h_out, w_out = args.im2col(x, kh, kw, stride, padding, out)
    buf = out_buffer(out)
    _im2col(contig(x), kh, kw, stride, padding, h_out, w_out, buf)
    return finish(out, buf)


def col2im(cols, C, H, W, kh, kw, stride, padding, out):
    """out (B, C, H, W): the adjoint of im2col (overlapping windows accumulate)."""
    kh, kw, stride, padding, h_out, w_out = args.col2im(cols, C, H, W, kh, kw, stride, padding, out)
    buf = out_buffer(out)
    _col2im(contig(cols), kh, kw, stride, padding, h_out, w_out, buf)
    return finish(out, buf)
