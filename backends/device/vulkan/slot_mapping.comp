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
 * One invocation per token on a flat 1-D grid; a batch larger than one
 * dispatch can cover is split by the host into dispatches with increasing
 * `first`. Measured on lavapipe (llvmpipe, 2 threads, 1M tokens): a
 * grid-stride loop made the kernel 2x slower, and so did a run-time branch
 * between shift and division, hence the POW2 specialisation constant (two
 * pipelines). Every token was range-checked on the host.
 *
 * Bindings: 0 = table image (int32, row-major [max_seqs][max_blocks], then the
 * context lengths), 1 = tokens (rows[num_tokens] then pos[num_tokens]),
 * 2 = output slots.
 */
#version 450

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool POW2 = true;

layout(std430, set = 0, binding = 0) readonly buffer Table { int tbl[]; };
layout(std430, set = 0, binding = 1) readonly buffer Tokens { uint tok[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Slots { uvec2 slots[]; };

layout(push_constant) uniform Params {
    uint num_tokens;
    uint padded;
    uint block_size;
    uint max_blocks;
    uint first; /* index of this dispatch's first token */
    uint shift; /* log2(block_size) when POW2 */
} pc;

void main()
{
    uint i = pc.first + gl_GlobalInvocationID.x;
    if (i >= pc.padded)
        return;
    uvec2 s = uvec2(0xffffffffu, 0xffffffffu);
    if (i < pc.num_tokens) {
        uint row = tok[i];
        uint p = tok[pc.num_tokens + i];
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
        s = uvec2(lo, hi + carry);
    }
    slots[i] = s;
}
