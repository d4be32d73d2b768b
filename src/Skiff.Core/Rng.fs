namespace Skiff.Core

/// A tiny deterministic random generator (SplitMix64). Its whole state is one number carried inside the reducer's
/// State, so a node's behaviour is a function of its seed and its events: replayable in the simulator.
[<RequireQualifiedAccess>]
module Rng =
    /// Returns a uniformly distributed 64-bit value and the next generator state.
    let next (state: uint64) : uint64 * uint64 =
        let s = state + 0x9E3779B97F4A7C15UL
        let mutable z = s
        z <- (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
        z <- (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z ^^^ (z >>> 31), s

    /// Returns an int in [lo, hi] (inclusive) and the next generator state. If hi < lo, returns lo.
    let range (lo: int) (hi: int) (state: uint64) : int * uint64 =
        if hi <= lo then
            lo, snd (next state)
        else
            let v, s = next state
            let span = uint64 (hi - lo + 1)
            lo + int (v % span), s
