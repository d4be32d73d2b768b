namespace Skiff.Core

/// A small immutable map from peer id to a value, for the leader's per-follower progress: sorted parallel arrays,
/// so lookups compare Guids with Guid.CompareTo (F#'s Map compares non-primitive keys through the generic
/// comparer, boxing both Guids on every comparison) and an update copies a handful of references. Iteration is in
/// ascending id order, the same order as Map's. Arrays are never written after a value holding them exists.
[<Sealed>]
type PeerMap<'V>(keys: NodeId[], values: 'V[]) =
    member internal _.Keys = keys
    member internal _.Values = values
    member _.Count = keys.Length

    member internal _.IndexOf(id: NodeId) : int =
        let mutable lo = 0
        let mutable hi = keys.Length - 1
        let mutable found = -1
        while found < 0 && lo <= hi do
            let mid = (lo + hi) >>> 1
            let c = keys[mid].CompareTo(id)
            if c = 0 then found <- mid
            elif c < 0 then lo <- mid + 1
            else hi <- mid - 1
        if found >= 0 then found else ~~~lo

    member this.ContainsKey(id: NodeId) = this.IndexOf id >= 0

    override this.Equals(o: obj) =
        match o with
        | :? PeerMap<'V> as m ->
            m.Count = keys.Length
            && Array.forall2 (fun (a: NodeId) b -> a.Equals b) keys m.Keys
            && Array.forall2 (fun (a: 'V) (b: 'V) -> Unchecked.equals a b) values m.Values
        | _ -> false

    override _.GetHashCode() = keys.Length

/// Map-like functions over PeerMap (same names and argument order as Map's).
[<RequireQualifiedAccess>]
module PeerMap =
    let empty<'V> : PeerMap<'V> = PeerMap<'V>([||], [||])

    let tryFind (id: NodeId) (m: PeerMap<'V>) : 'V option =
        let i = m.IndexOf id
        if i >= 0 then Some m.Values[i] else None

    /// tryFind without allocating an option (asked several times in every leader step).
    let tryItem (id: NodeId) (m: PeerMap<'V>) : 'V voption =
        let i = m.IndexOf id
        if i >= 0 then ValueSome m.Values[i] else ValueNone

    let add (id: NodeId) (v: 'V) (m: PeerMap<'V>) : PeerMap<'V> =
        let i = m.IndexOf id
        if i >= 0 then
            let vs = Array.copy m.Values
            vs[i] <- v
            PeerMap(m.Keys, vs)
        else
            let at = ~~~i
            PeerMap(Array.insertAt at id m.Keys, Array.insertAt at v m.Values)

    let filter (f: NodeId -> 'V -> bool) (m: PeerMap<'V>) : PeerMap<'V> =
        let ks = ResizeArray()
        let vs = ResizeArray()
        for i in 0 .. m.Count - 1 do
            if f m.Keys[i] m.Values[i] then
                ks.Add m.Keys[i]
                vs.Add m.Values[i]
        if ks.Count = m.Count then m else PeerMap(ks.ToArray(), vs.ToArray())

    let map (f: NodeId -> 'V -> 'W) (m: PeerMap<'V>) : PeerMap<'W> = PeerMap(m.Keys, Array.init m.Count (fun i -> f m.Keys[i] m.Values[i]))

    /// Maps every value while threading a state through, in ascending id order: one new map for all the updates.
    let mapFold (f: 'S -> NodeId -> 'V -> struct ('V * 'S)) (state: 'S) (m: PeerMap<'V>) : struct (PeerMap<'V> * 'S) =
        let values = Array.zeroCreate m.Count
        let mutable acc = state
        for i in 0 .. m.Count - 1 do
            let struct (v, a) = f acc m.Keys[i] m.Values[i]
            values[i] <- v
            acc <- a
        struct (PeerMap(m.Keys, values), acc)

    /// Folds in ascending id order.
    let fold (f: 'S -> NodeId -> 'V -> 'S) (state: 'S) (m: PeerMap<'V>) : 'S =
        let mutable acc = state
        for i in 0 .. m.Count - 1 do
            acc <- f acc m.Keys[i] m.Values[i]
        acc

    let toList (m: PeerMap<'V>) : (NodeId * 'V) list = List.init m.Count (fun i -> m.Keys[i], m.Values[i])
