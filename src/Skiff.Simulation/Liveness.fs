namespace Skiff.Simulation

open Skiff.Core

/// One node as the partial-failure liveness check sees it at a tick.
[<Struct>]
type LivenessNode =
    {
        /// The node's id.
        Id: NodeId
        /// Running (not crashed or paused).
        Alive: bool
        /// The configuration in force on the node.
        Config: Configuration
        /// It is a leader that has committed an entry of its current term (so writes it takes can commit).
        CommittingLeader: bool
    }

/// Liveness under partial failure, the property etcd's users rely on: while a majority of voters can talk to each
/// other both ways (whatever else is cut, one way or both, and whoever is paused), a leader is elected within a
/// bound and writes commit. Without CheckQuorum it does not hold (etcd neither): a leader that can send but not
/// hear keeps resetting its followers' timers forever.
///
/// Precisely: a *healthy majority* is a set of running nodes that hold the same configuration, are voters in it,
/// make a majority of its voters, and are connected both ways pairwise. While the network is good (no loss, short
/// delays, fast disks) and some healthy majority exists, then within `bound` ticks of the moment the healthy
/// majorities last changed (or of the last success) there must be a leader that has committed an entry of its
/// term and is connected both ways to a majority of its configuration's voters. It may lie outside the healthy
/// majorities (a star of links around it is enough to commit).
///
/// Nodes are numbered by position (at most 30); `connected a b` says whether messages from a reach b.
[<Sealed>]
type PartialLiveness(bound: int) =
    let mutable lastHealthy = 0
    let mutable since = 0L
    let mutable worst = 0
    let mutable applied = 0L
    // The healthy majorities change only with the links, the running nodes and their configurations: remember the
    // last inputs (configurations by reference) so that a tick usually costs a comparison.
    let mutable cacheAdjacency: int[] = [||]
    let mutable cacheNodes: LivenessNode[] = [||]
    let mutable cacheHealthy = 0

    static let bits (m: int) = System.Numerics.BitOperations.PopCount(uint32 m)

    static let isVoterIn (id: NodeId) (c: Configuration) =
        match Map.tryFind id c.Members with
        | Some m -> m.Voter
        | None -> false

    /// Both-ways adjacency as bitmasks over positions.
    static member Adjacency(count: int, connected: int -> int -> bool) : int[] =
        Array.init count (fun i ->
            let mutable m = 0
            for j in 0 .. count - 1 do
                if i <> j && connected i j && connected j i then
                    m <- m ||| (1 <<< j)
            m)

    /// The positions (a bitmask) that belong to some healthy majority; 0 if there is none.
    static member Healthy(nodes: LivenessNode[], adjacency: int[]) : int =
        let mutable healthy = 0
        let mutable seen: Configuration list = []
        for k in 0 .. nodes.Length - 1 do
            let c = nodes[k].Config
            if nodes[k].Alive && not (seen |> List.exists (fun s -> obj.ReferenceEquals(s, c) || s = c)) then
                seen <- c :: seen
                let voters = c.Voters
                let quorum = voters.Count / 2 + 1
                let mutable eligible = 0
                for i in 0 .. nodes.Length - 1 do
                    let n = nodes[i]
                    if n.Alive && voters.Contains n.Id && (obj.ReferenceEquals(n.Config, c) || n.Config = c) then
                        eligible <- eligible ||| (1 <<< i)
                if not voters.IsEmpty && bits eligible >= quorum then
                    // Every subset of the eligible nodes (at most 2^7 in the simulator) that is a clique.
                    let mutable sub = eligible
                    while sub <> 0 do
                        if bits sub >= quorum && sub &&& ~~~healthy <> 0 then
                            let mutable clique = true
                            for i in 0 .. nodes.Length - 1 do
                                if clique && sub &&& (1 <<< i) <> 0 && (adjacency[i] ||| (1 <<< i)) &&& sub <> sub then
                                    clique <- false
                            if clique then
                                healthy <- healthy ||| sub
                        sub <- (sub - 1) &&& eligible
        healthy

    /// Whether node `i` leads, has committed in its term and reaches a majority of its voters both ways.
    static member Serving(nodes: LivenessNode[], adjacency: int[], i: int) : bool =
        let n = nodes[i]
        n.Alive
        && n.CommittingLeader
        && (let voters = n.Config.Voters
            let mutable reach = if voters.Contains n.Id then 1 else 0
            for j in 0 .. nodes.Length - 1 do
                if adjacency[i] &&& (1 <<< j) <> 0 && nodes[j].Alive && isVoterIn nodes[j].Id n.Config then
                    reach <- reach + 1
            not voters.IsEmpty && reach >= voters.Count / 2 + 1)

    /// The longest wait seen from a change of the healthy majorities to a serving leader, in ticks.
    member _.Worst = worst

    /// Ticks on which the property applied (a healthy majority on a good network).
    member _.AppliedTicks = applied

    /// Observes the cluster at tick `now`; a description of the violation once the bound is passed.
    member _.Observe(now: int64, goodNetwork: bool, nodes: LivenessNode[], connected: int -> int -> bool) : string option =
        let adjacency = PartialLiveness.Adjacency(nodes.Length, connected)
        let same =
            cacheNodes.Length = nodes.Length
            && adjacency = cacheAdjacency
            && Array.forall2
                (fun (a: LivenessNode) (b: LivenessNode) -> a.Alive = b.Alive && obj.ReferenceEquals(a.Config, b.Config))
                cacheNodes
                nodes
        if not same then
            cacheAdjacency <- adjacency
            cacheNodes <- Array.copy nodes
            cacheHealthy <- PartialLiveness.Healthy(nodes, adjacency)
        let healthy = if goodNetwork then cacheHealthy else 0
        if healthy = 0 then
            lastHealthy <- 0
            since <- now
            None
        else
            applied <- applied + 1L
            if healthy <> lastHealthy then
                lastHealthy <- healthy
                since <- now
            let serving = Seq.exists (fun i -> PartialLiveness.Serving(nodes, adjacency, i)) (seq { 0 .. nodes.Length - 1 })
            if serving then
                worst <- max worst (int (now - since))
                since <- now
                None
            elif now - since >= int64 bound then
                let members =
                    [ for i in 0 .. nodes.Length - 1 do
                          if healthy &&& (1 <<< i) <> 0 then
                              yield i ]
                Some(sprintf "no leader committing with a majority %d ticks after positions %A formed a healthy majority" bound members)
            else
                None
