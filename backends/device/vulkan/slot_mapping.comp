/*
 * slot_mapping.comp - slot mapping for the Vulkan device backend.
 *
 * For token i < num_tokens:
 *     slot[i] = table[rows[i]][pos[i] / bs] * bs + pos[i] % bs        (int64)
 * and slot[i] = -1 for i in [num_tokens, padded).
 *
 * The 64-bit result is formed from two 32-bit words with umulExtended and
 * uaddCarry and stored as a uvec2 (low word first, i.e. a little-endian int64),
 * so the device needs no shaderInt64. Block ids are non-negative int32, block
 * sizes at most 1024, so the product fits in 41 bits.
 *
 * Four tokens per invocation (uvec4 loads of rows and positions, two uvec4
 * stores) on a flat 1-D grid; a batch larger than one dispatch can cover is
 * split by the host into dispatches with increasing `first` (in groups of
 * four). Measured on lavapipe (llvmpipe, 2 threads, 1M tokens): one token per
 * invocation took 12 ms, four 9 ms; a grid-stride loop made the kernel 2x
 * slower, and so did a run-time branch between shift and division, hence the
 * POW2 specialisation constant (two pipelines). Every token was range-checked
 * on the host; lanes past num_tokens (the round-up to four) never read the
 * table.
 *
 * Bindings: 0 = table image (int32, row-major [max_seqs][max_blocks], then the
 * context lengths), 1 = tokens (rows[n4] then pos[n4], n4 = num_tokens
 * rounded up to 4), 2 = output slots (room for padded rounded up to 4).
 */
#version 450

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool POW2 = true;

layout(std430, set = 0, binding = 0) readonly buffer Table { int tbl[]; };
layout(std430, set = 0, binding = 1) readonly buffer Tokens { uvec4 tok[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Slots { uvec4 slots[]; };

layout(push_constant) uniform Params {
    uint num_tokens;
    uint padded;
    uint block_size;
    uint max_blocks;
    uint first; /* first group of four tokens of this dispatch */
    uint shift; /* log2(block_size) when POW2 */
} pc;

uvec2 slot(uint i, uint row, uint p)
{
    if (i >= pc.num_tokens)
        return uvec2(0xffffffffu, 0xffffffffu); /* padding: -1 */
    uint q, r;
    if (POW2) {
        q = p >> pc.shift;
        r = p & (pc.block_size - 1u);
    } else {
        q = p / pc.block_size;
        r = p - q * pc.block_size;
    }
    uint blk = uint(tbl[row * pc.max_blocks + q]);
    uint hi, lo, carry;
    umulExtended(blk, pc.block_size, hi, lo);
    lo = uaddCarry(lo, r, carry);
    return uvec2(lo, hi + carry);
}

void main()
{
    uint g = pc.first + gl_GlobalInvocationID.x;
    uint i = 4u * g;
    if (i >= pc.padded)
        return;
    uint n4 = (pc.num_tokens + 3u) / 4u;
    uvec4 rw = tok[g];
    uvec4 ps = tok[n4 + g];
    slots[2u * g] = uvec4(slot(i, rw.x, ps.x), slot(i + 1u, rw.y, ps.y));
    slots[2u * g + 1u] = uvec4(slot(i + 2u, rw.z, ps.z), slot(i + 3u, rw.w, ps.w));
}
