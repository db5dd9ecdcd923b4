"""im2col / col2im (gpu backend). Spec: ``kernels.reference``.

im2col: one thread per element of the column matrix out[b, row, o], the output positions o on
the fast thread axis so that a warp writes a contiguous piece of a row. col2im is its adjoint
as a gather, one thread per image pixel summing the column entries that read it, so
overlapping windows need no atomics and add up in a fixed order. Both map indices with the
same helper (``patch_row``), written once.
"""
from numba import cuda

from ..cpu import args
from .launch import contig, finish, out_buffer, row_column_launch


@cuda.jit(device=True)
def patch_row(c, i, j, kh, kw):
    """The row of the column matrix that holds kernel tap (i, j) of channel c."""
    return (c * kh + i) * kw + j


@cuda.jit
def _im2col(x, kh, kw, stride, padding, w_out, out):
    o, row, b = cuda.grid(3)                         # o = oh * w_out + ow
    if o < out.shape[2] and row < out.shape[1] and b < out.shape[0]:
        c, tap = row // (kh * kw), row % (kh * kw)
        ih = (o // w_out) * stride - padding + tap // kw
        iw = (o % w_out) * stride - padding + tap % kw
        if 0 <= ih < x.shape[2] and 0 <= iw < x.shape[3]:
            out[b, row, o] = x[b, c, ih, iw]
        else:
            out[b, row, o] = 0


@cuda.jit
def _col2im(cols, kh, kw, stride, padding, h_out, w_out, out, zero):
    pixel, bc = cuda.grid(2)                         # pixel = h * W + w, bc = b * C + c
    B, C, H, W = out.shape
    if pixel < H * W and bc < B * C:
        b, c = bc // C, bc % C
        h, w = pixel // W, pixel % W
        acc = zero
        for i in range(kh):
            top = h + padding - i                    # = oh * stride for the window that reads it
            if top >= 0 and top % stride == 0 and top // stride < h_out:
                for j in range(kw):
                    left = w + padding - j
                    if left >= 0 and left % stride == 0 and left // stride < w_out:
                        o = (top // stride) * w_out + left // stride
                        acc += cols[b, patch_row(c, i, j, kh, kw), o]
        out[b, c, h, w] = acc


def im2col(x, kh, kw, stride, padding, out):
    """out (B, C*kh*kw, H_out*W_out): zero-padded patch columns of x (B, C, H, W)."""
    kh, kw, stride, padding, h_out, w_out = args.im2col(x, kh, kw, stride, padding, out)
    buf = out_buffer(out)
    B, rows, positions = buf.shape
    if buf.size:
        (grid_x, grid_y), (tx, ty) = row_column_launch(rows, positions)
        _im2col[(grid_x, grid_y, B), (tx, ty, 1)](contig(x), kh, kw, stride, padding, w_out, buf)
    return finish(out, buf)


def col2im(cols, C, H, W, kh, kw, stride, padding, out):
    """out (B, C, H, W): the adjoint of im2col (overlapping windows accumulate)."""
    kh, kw, stride, padding, h_out, w_out = args.col2im(cols, C, H, W, kh, kw, stride, padding, out)
    buf = out_buffer(out)
    if buf.size:
        grid, threads = row_column_launch(cols.shape[0] * C, H * W)
        _col2im[grid, threads](contig(cols), kh, kw, stride, padding, h_out, w_out, buf,
                               cols.dtype.type(0))
    return finish(out, buf)

