// arch.cu: the kernel of the fatbin the parser's tests read
// (build/tests/data/arch.fatbin), compiled with the project's -gencode
// list: SASS for sm_80 and sm_90, PTX for compute_90.
extern "C" __global__ void saxpy(int n, float a, const float *x, float *y)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a * x[i] + y[i];
}
