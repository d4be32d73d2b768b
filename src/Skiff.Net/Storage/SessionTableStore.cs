using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Storage;

/// <summary>
/// The client session table (see Skiff.Core.Sessions) and its persistence. Sessions live in memory and are written
/// into the store, one record per session under a reserved key, just before each checkpoint: between checkpoints
/// the store is rebuilt by replaying the log, which rebuilds the sessions too, so writing them with every apply
/// would buy nothing. Not thread-safe: the state machine serialises access under its lock.
/// </summary>
internal sealed class SessionTableStore
{
    /// <summary>Client session i is kept under this prefix + i.</summary>
    private const string Prefix = KvStateMachine.ReservedPrefix + "session/";

    private readonly FasterKvStore _store;
    private readonly HashSet<long> _changed = new();

    /// <summary>The sessions as of the last applied entry.</summary>
    public Sessions.Table Table { get; private set; }

    private SessionTableStore(FasterKvStore store, Sessions.Table table)
    {
        _store = store;
        Table = table;
    }

    /// <summary>The id of the session <paramref name="key"/> holds, if it is a session key.</summary>
    public static long? IdOf(string key) =>
        key.StartsWith(Prefix, StringComparison.Ordinal) && long.TryParse(key.AsSpan(Prefix.Length), out var i) ? i : null;

    private static string KeyOf(long id) => Prefix + id.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Reads the sessions the last checkpoint wrote.</summary>
    /// <param name="store">The store.</param>
    /// <param name="dir">The store's directory, for errors.</param>
    /// <param name="clock">The sessions' clock, stored with the applied index.</param>
    /// <param name="ids">The ids of the session records found in the store.</param>
    public static SessionTableStore Load(FasterKvStore store, string dir, long clock, IEnumerable<long> ids)
    {
        var table = MapModule.Empty<long, Sessions.Session>();
        foreach (var id in ids)
        {
            var record = store.Read(KeyOf(id))
                ?? throw new SkiffException(ErrorKind.StorageCorrupted, $"the session table in {dir} lost session {id}");
            var decoded = Sessions.decode(record);
            if (decoded.IsError)
                throw new SkiffException(ErrorKind.StorageCorrupted, $"session {id} in {dir} is damaged: {decoded.ErrorValue}");
            table = table.Add(id, decoded.ResultValue);
        }
        return new SessionTableStore(store, new Sessions.Table(clock, table));
    }

    /// <summary>Takes the table an apply produced, and remembers the sessions it touched for the next checkpoint.</summary>
    public void Update(Sessions.Table table, IEnumerable<Sessions.Touched> touched)
    {
        Table = table;
        foreach (var t in touched)
            _changed.Add(t is Sessions.Touched.Saved saved ? saved.session.Id : ((Sessions.Touched.Removed)t).session);
    }

    /// <summary>Writes the sessions changed since the last checkpoint into the store (before taking the next).</summary>
    public void WriteChanged()
    {
        foreach (var id in _changed)
        {
            var key = KeyOf(id);
            var found = Table.Sessions.TryFind(id);
            if (FSharpOption<Sessions.Session>.get_IsSome(found)) _store.Upsert(key, Sessions.encode(found!.Value));
            else _store.Delete(key);
        }
        _changed.Clear();
    }
}
