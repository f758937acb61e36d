/*
 * scatter.comp - scattered table upload for the Vulkan device backend.
 *
 * A sync whose dirty spans are many and short (one block appended to each of
 * thousands of rows) would need one vkCmdCopyBuffer region per span; lavapipe
 * pays ~0.2 us per region (0.85 ms for 4096). Short spans are therefore
 * uploaded as (word index, value) pairs in the staging ring and written by
 * this kernel, one invocation per word; long spans still use copy regions.
 *
 * Bindings: 0 = table image (written), 3 = the table's staging ring, read as
 * uvec2 pairs starting at pair index `base`.
 */
#version 450

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) writeonly buffer Image { int img[]; };
layout(std430, set = 0, binding = 3) readonly buffer Stage { uvec2 pairs[]; };

layout(push_constant) uniform Params {
    uint base;  /* first pair of this dispatch in the staging ring */
    uint count; /* pairs in this dispatch */
} pc;

void main()
{
    uint i = gl_GlobalInvocationID.x;
    if (i >= pc.count)
        return;
    uvec2 p = pairs[pc.base + i];
    img[p.x] = int(p.y);
}
