namespace Skiff.Core

/// The leader's commit rule, and the early notice of a new commit index to followers that are idle.
[<RequireQualifiedAccess>]
module Commit =
    /// How far a voter's log is known to match: this leader counts itself only up to what it has persisted.
    let private matchOf (s: State) (lead: LeaderState) (voter: NodeId) : LogIndex =
        if voter = s.Id then
            s.Log.Persisted
        else
            match PeerMap.tryItem voter lead.Progress with
            | ValueSome p -> p.Match
            | ValueNone -> 0L

    /// Commit rule (thesis §3.6.2): the highest index stored on a majority of voters, provided its entry is of
    /// the current term. The leader counts itself only up to what it has persisted, and not at all if removed.
    let maybeCommit (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let voters = s.VoterIds
            if voters.Length = 0 then
                s
            else
                // The quorum-th largest match above the commit index: the highest that a quorum has reached.
                // Quadratic in the voters (a handful), but allocates nothing on a step every write takes.
                let quorum = State.majority voters.Length
                let mutable n = s.Commit
                for v in voters do
                    let x = matchOf s lead v
                    if x > n then
                        let mutable reached = 0
                        for w in voters do
                            if matchOf s lead w >= x then
                                reached <- reached + 1
                        if reached >= quorum then
                            n <- x
                if n > s.Commit && LogView.hasTerm n s.Term s.Log then
                    // The newly committed entries of this term no longer count as uncommitted. One that has left
                    // the window cannot be measured: then the count stays high until everything is committed,
                    // when it is exactly zero again (so an overestimate heals as soon as the leader catches up).
                    let uncommitted =
                        if n >= s.Log.LastIndex then
                            0L
                        else
                            let mutable u = lead.Uncommitted
                            let mutable i = s.Commit + 1L
                            while i <= n do
                                match LogView.tryEntry i s.Log with
                                | Some e when e.Term = s.Term -> u <- u - int64 (LogView.entrySize e)
                                | _ -> ()
                                i <- i + 1L
                            max 0L u
                    let s = { s with Commit = n }
                    // Tell idle followers about the new commit index now rather than at the next heartbeat.
                    let out =
                        lead.Progress
                        |> PeerMap.fold
                            (fun out peer pr ->
                                if pr.Mode = ProgressMode.Replicate && pr.Inflight.IsEmpty && not pr.Loading then
                                    match LogView.tryTerm pr.Match s.Log with
                                    | ValueSome t -> Replication.appendTo peer pr.Match t [] lead.Round s :: out
                                    | ValueNone -> out
                                else
                                    out)
                            s.Out
                    { s with Leading = Some { lead with Uncommitted = uncommitted }; Out = out }
                else
                    s
