using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>
/// A key-value store of older versions, opened only to be read once by <see cref="KvFormatMigration"/>: a
/// <see cref="FasterKV{Key, Value}"/> of string keys and byte-array values, whose records hold references to managed
/// objects written to a second device, the object log (<c>hlog.obj.log.N</c>). Its in-memory size counted records,
/// not the objects they pointed to, which is why values no longer live there (see <see cref="FasterKvStore"/>).
/// </summary>
internal sealed class LegacyObjectStore : IDisposable
{
    private readonly IDevice _logDevice;
    private readonly IDevice _objDevice;
    private readonly FasterKV<string, byte[]> _kv;

    private LegacyObjectStore(IDevice logDevice, IDevice objDevice, FasterKV<string, byte[]> kv)
    {
        _logDevice = logDevice;
        _objDevice = objDevice;
        _kv = kv;
    }

    /// <summary>Opens the store in <paramref name="dir"/>, written with <paramref name="geometry"/>, and recovers
    /// its newest complete checkpoint; null if it has none.</summary>
    public static LegacyObjectStore? TryOpen(string dir, StoreGeometry geometry, long indexSizeBytes)
    {
        var logDevice = Devices.CreateLogDevice(Path.Combine(dir, "hlog.log"), preallocateFile: false);
        var objDevice = Devices.CreateLogDevice(Path.Combine(dir, "hlog.obj.log"), preallocateFile: false);
        FasterKV<string, byte[]>? kv = null;
        try
        {
            var settings = new FasterKVSettings<string, byte[]>(null)
            {
                IndexSize = indexSizeBytes,
                LogDevice = logDevice,
                ObjectLogDevice = objDevice,
                PageSize = 1L << geometry.PageSizeBits,
                // At least what the store was written with (older versions used 2^25, later 2^23): FASTER's recovery
                // copies the checkpoint's object-log offsets, one per segment of memory, into an array of this size.
                // Only the pages the checkpoint held in memory are read back, so this allocates no more than that.
                MemorySize = 1L << Math.Max(25, geometry.PageSizeBits + 3),
                SegmentSize = 1L << geometry.SegmentSizeBits,
                CheckpointDir = Path.Combine(dir, "checkpoints"),
                RemoveOutdatedCheckpoints = false,
                TryRecoverLatest = false,
                ReadCacheEnabled = false,
                KeySerializer = () => new StringSerializer(),
                ValueSerializer = () => new BytesSerializer(),
            };
            kv = new FasterKV<string, byte[]>(settings);
            kv.Recover();
            return new LegacyObjectStore(logDevice, objDevice, kv);
        }
        catch (FasterException e) when (e.Message.Contains("Unable to find valid", StringComparison.Ordinal))
        {
            kv?.Dispose();
            logDevice.Dispose();
            objDevice.Dispose();
            return null;
        }
        catch
        {
            kv?.Dispose();
            logDevice.Dispose();
            objDevice.Dispose();
            throw;
        }
    }

    /// <summary>The live records (key and value), each key once, tombstones left out.</summary>
    public IEnumerable<(string Key, byte[] Value)> LiveRecords()
    {
        using var session = _kv.NewSession<byte[], byte[], Empty>(new SimpleFunctions<string, byte[], Empty>());
        using var iter = session.Iterate();
        while (iter.GetNext(out var info))
        {
            if (info.Tombstone) continue;
            yield return (iter.GetKey(), iter.GetValue());
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _kv.Dispose();
        _logDevice.Dispose();
        _objDevice.Dispose();
    }

    private sealed class StringSerializer : BinaryObjectSerializer<string>
    {
        public override void Serialize(ref string obj) => writer.Write(obj);
        public override void Deserialize(out string obj) => obj = reader.ReadString();
    }

    private sealed class BytesSerializer : BinaryObjectSerializer<byte[]>
    {
        public override void Serialize(ref byte[] obj)
        {
            writer.Write(obj.Length);
            writer.Write(obj);
        }

        public override void Deserialize(out byte[] obj)
        {
            int n = reader.ReadInt32();
            obj = reader.ReadBytes(n);
        }
    }
}
