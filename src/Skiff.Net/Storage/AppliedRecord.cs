using System.Buffers.Binary;

namespace Skiff.Net.Storage;

/// <summary>
/// What the state machine stores under a reserved key with every applied entry, so that every checkpoint carries
/// the position it reflects: the applied index and term, the change history's floor and the client sessions'
/// clock. Written with each apply (one upsert in place), never read except when opening.
/// </summary>
/// <param name="Index">The index of the last applied entry.</param>
/// <param name="Term">Its term.</param>
/// <param name="HistoryFloor">Every change after this index is in the change history.</param>
/// <param name="SessionClock">The client sessions' clock (the largest leader time applied).</param>
internal readonly record struct AppliedRecord(long Index, long Term, long HistoryFloor, long SessionClock)
{
    /// <summary>The reserved key it is stored under.</summary>
    public const string Key = KvStateMachine.ReservedPrefix + "applied";

    /// <summary>32 bytes: index, term, history floor, session clock (little-endian).</summary>
    public byte[] Encode()
    {
        var v = new byte[32];
        BinaryPrimitives.WriteInt64LittleEndian(v, Index);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(8), Term);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(16), HistoryFloor);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(24), SessionClock);
        return v;
    }

    /// <summary>Reads a stored record; nothing stored (a new store) is all zeros. Older stores wrote shorter
    /// records: 16 bytes (before the change history: it starts at the applied index) and 24 bytes (before client
    /// sessions: their clock is 0).</summary>
    public static AppliedRecord Decode(byte[]? stored)
    {
        if (stored is not { Length: >= 16 }) return default;
        var index = BinaryPrimitives.ReadInt64LittleEndian(stored);
        var term = BinaryPrimitives.ReadInt64LittleEndian(stored.AsSpan(8));
        var floor = stored.Length >= 24 ? BinaryPrimitives.ReadInt64LittleEndian(stored.AsSpan(16)) : index;
        var clock = stored.Length >= 32 ? BinaryPrimitives.ReadInt64LittleEndian(stored.AsSpan(24)) : 0;
        return new AppliedRecord(index, term, floor, clock);
    }
}
