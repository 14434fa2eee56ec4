"""The search space: what a genotype is and what it builds. The operation table (conv 3x3,
separable, dilated), the genotype encoding (paper integers, release bits, FF bits), DeCoNASNet
(mix nodes, DNBs, LFF, GFF, the upsampler) and the parameters and Mult-Adds a genotype costs,
computed from the genotype alone."""
