"""The search: the supernet of shared weights (ENAS), the LSTM controller (REINFORCE), the
reward (PSNR minus the CB penalty), the loop that trains both, derive (sample and rank
candidates from a trained controller), the study (do the searched networks beat random ones?)
and the readers of a search's run folder that derive and the study start from."""
