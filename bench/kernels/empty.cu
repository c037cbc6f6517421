/* empty.cu: a kernel that does nothing, for timing a launch itself
 * (bench/gpu_bench.c). */
extern "C" __global__ void empty(void)
{
}
