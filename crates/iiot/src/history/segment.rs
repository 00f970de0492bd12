//! Segments as Parquet files (the `parquet` crate's column API, no Arrow): rows sorted by
//! device then time, 8,192 rows per row group, zstd. The device column is dictionary-encoded
//! and carries min/max statistics per row group, so a query for one device reads only the row
//! groups that can hold it. Values are `DECIMAL(9,2)` (hundredths) and times
//! `TIMESTAMP(MILLIS, UTC)`: DuckDB, pandas or Polars read a segment as it is.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::column::reader::ColumnReader;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;

use super::rollup::{Bucket, PARAMS};
use super::row::Row;

/// Rows per row group: the unit a device query reads.
const ROW_GROUP: usize = 8_192;

const RAW_SCHEMA: &str = "
message raw {
  required binary device_id (STRING);
  required int64 t (TIMESTAMP(MILLIS,true));
  required int32 temperature (DECIMAL(9,2));
  required int32 humidity (DECIMAL(9,2));
  required int32 pressure (DECIMAL(9,2));
  required int32 current (DECIMAL(9,2));
  required int32 battery;
  required int32 signal_strength;
  required boolean switch_on;
  required int32 statuses;
}";

/// The parameters' column names, in [`iiot_model::Parameter::ALL`] order.
const NAMES: [&str; PARAMS] = [
    "temperature",
    "humidity",
    "pressure",
    "current",
    "battery",
    "signal_strength",
];

fn rollup_schema() -> String {
    let mut s = String::from(
        "message rollup {\n  required binary device_id (STRING);\n  \
         required int64 t (TIMESTAMP(MILLIS,true));\n  required int32 count;\n",
    );
    for (i, name) in NAMES.iter().enumerate() {
        let (small, big) = if i < 4 {
            (" (DECIMAL(9,2))", " (DECIMAL(18,2))")
        } else {
            ("", "")
        };
        s.push_str(&format!(
            "  required int32 {name}_min{small};\n  required int32 {name}_max{small};\n  \
             required int64 {name}_sum{big};\n"
        ));
    }
    s.push('}');
    s
}

fn err(e: ParquetError) -> io::Error {
    match e {
        ParquetError::External(inner) => io::Error::other(inner),
        other => io::Error::other(other),
    }
}

/// Delta-encoded times, byte-stream-split integers (smallest on the simulator's data: see
/// `docs/benchmarks.md`), the device column as a dictionary, zstd level 3.
fn properties(int_columns: &[String]) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("device_id"), true)
        .set_column_encoding(ColumnPath::from("t"), Encoding::DELTA_BINARY_PACKED)
        .set_created_by(format!("iiot {}", env!("CARGO_PKG_VERSION")));
    for c in int_columns {
        b = b.set_column_encoding(ColumnPath::from(c.as_str()), Encoding::BYTE_STREAM_SPLIT);
    }
    b.build()
}

/// One column's values for a row group.
enum Values<'a> {
    Bytes(&'a [ByteArray]),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

/// Writes `rows` (flattened, sorted) with `columns` producing each column of a slice.
fn write_file<'a>(
    path: &Path,
    schema: &str,
    int_columns: &[String],
    ids: &'a [ByteArray],
    columns: impl Fn(usize, std::ops::Range<usize>) -> Option<Values<'a>>,
) -> io::Result<()> {
    let schema = Arc::new(parse_message_type(schema).map_err(err)?);
    let file = File::create(path)?;
    let mut w =
        SerializedFileWriter::new(file, schema, Arc::new(properties(int_columns))).map_err(err)?;
    let mut start = 0;
    while start < ids.len() {
        let end = (start + ROW_GROUP).min(ids.len());
        let mut rg = w.next_row_group().map_err(err)?;
        let mut k = 0;
        while let Some(mut col) = rg.next_column().map_err(err)? {
            let written = match columns(k, start..end) {
                Some(Values::Bytes(v)) => col.typed::<ByteArrayType>().write_batch(v, None, None),
                Some(Values::I64(v)) => col.typed::<Int64Type>().write_batch(&v, None, None),
                Some(Values::I32(v)) => col.typed::<Int32Type>().write_batch(&v, None, None),
                Some(Values::Bool(v)) => col.typed::<BoolType>().write_batch(&v, None, None),
                None => Err(ParquetError::General(format!("no column {k}"))),
            };
            written.map_err(err)?;
            col.close().map_err(err)?;
            k += 1;
        }
        rg.close().map_err(err)?;
        start = end;
    }
    let file = w.into_inner().map_err(err)?;
    file.sync_data()
}

/// Writes the raw segment of `devices` (sorted by id; each device's rows sorted by time).
pub(crate) fn write_raw(path: &Path, devices: &[(&str, Vec<Row>)]) -> io::Result<()> {
    let mut ids = Vec::new();
    let mut rows = Vec::new();
    for (id, r) in devices {
        let id = ByteArray::from(*id);
        for row in r {
            ids.push(id.clone());
            rows.push(*row);
        }
    }
    let ints: Vec<String> = NAMES
        .iter()
        .map(|s| s.to_string())
        .chain(["statuses".to_string()])
        .collect();
    write_file(path, RAW_SCHEMA, &ints, &ids, |k, range| {
        let rows = &rows[range.clone()];
        Some(match k {
            0 => Values::Bytes(&ids[range]),
            1 => Values::I64(rows.iter().map(|r| r.t).collect()),
            2..=7 => Values::I32(rows.iter().map(|r| r.code(k - 2)).collect()),
            8 => Values::Bool(rows.iter().map(|r| r.switch_on).collect()),
            9 => Values::I32(rows.iter().map(|r| i32::from(r.statuses)).collect()),
            _ => return None,
        })
    })
}

/// Writes a rollup segment of `devices` (sorted by id; buckets sorted by time).
pub(crate) fn write_rollups(path: &Path, devices: &[(&str, Vec<Bucket>)]) -> io::Result<()> {
    let mut ids = Vec::new();
    let mut buckets = Vec::new();
    for (id, b) in devices {
        let id = ByteArray::from(*id);
        for bucket in b {
            ids.push(id.clone());
            buckets.push(*bucket);
        }
    }
    let ints: Vec<String> = std::iter::once("count".to_string())
        .chain(
            NAMES
                .iter()
                .flat_map(|n| ["min", "max", "sum"].map(|part| format!("{n}_{part}"))),
        )
        .collect();
    write_file(path, &rollup_schema(), &ints, &ids, |k, range| {
        let b = &buckets[range.clone()];
        Some(match k {
            0 => Values::Bytes(&ids[range]),
            1 => Values::I64(b.iter().map(|b| b.t).collect()),
            2 => Values::I32(b.iter().map(|b| b.count as i32).collect()),
            k if k < 3 + 3 * PARAMS => {
                let (p, part) = ((k - 3) / 3, (k - 3) % 3);
                match part {
                    0 => Values::I32(b.iter().map(|b| b.min[p]).collect()),
                    1 => Values::I32(b.iter().map(|b| b.max[p]).collect()),
                    _ => Values::I64(b.iter().map(|b| b.sum[p]).collect()),
                }
            }
            _ => return None,
        })
    })
}

macro_rules! reader {
    ($name:ident, $t:ty, $variant:ident) => {
        fn $name(rg: &dyn RowGroupReader, col: usize, n: usize) -> io::Result<Vec<$t>> {
            let mut out: Vec<$t> = Vec::with_capacity(n);
            match rg.get_column_reader(col).map_err(err)? {
                ColumnReader::$variant(mut r) => {
                    while out.len() < n {
                        let (records, _, _) = r
                            .read_records(n - out.len(), None, None, &mut out)
                            .map_err(err)?;
                        if records == 0 {
                            break;
                        }
                    }
                }
                _ => return Err(io::Error::other(format!("column {col} has another type"))),
            }
            if out.len() != n {
                return Err(io::Error::other(format!("column {col} is short")));
            }
            Ok(out)
        }
    };
}
reader!(read_i32, i32, Int32ColumnReader);
reader!(read_i64, i64, Int64ColumnReader);
reader!(read_bool, bool, BoolColumnReader);
reader!(read_bytes, ByteArray, ByteArrayColumnReader);

/// Calls `each` with every row group that may hold `device` (all of them for `None`), its row
/// count and the device ids of its rows.
fn scan(
    path: &Path,
    device: Option<&str>,
    mut each: impl FnMut(&dyn RowGroupReader, usize, &[ByteArray]) -> io::Result<()>,
) -> io::Result<()> {
    let reader = SerializedFileReader::new(File::open(path)?).map_err(err)?;
    let md = reader.metadata();
    for i in 0..md.num_row_groups() {
        let rgm = md.row_group(i);
        if let (Some(id), Some(Statistics::ByteArray(s))) = (device, rgm.column(0).statistics())
            && let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt())
            && (id.as_bytes() < lo.data() || id.as_bytes() > hi.data())
        {
            continue;
        }
        let rg = reader.get_row_group(i).map_err(err)?;
        let n = usize::try_from(rgm.num_rows()).unwrap_or(0);
        let ids = read_bytes(rg.as_ref(), 0, n)?;
        each(rg.as_ref(), n, &ids)?;
    }
    Ok(())
}

/// Which columns of a raw segment a query decodes (the others are left at zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Columns {
    /// Every column (export).
    All,
    /// The time and parameter `p` ([`iiot_model::Parameter::ALL`] order): a history query.
    One(usize),
    /// The time only: whether a reading is there.
    Time,
}

/// The rows of `device` in the raw segment at `path`, with `columns` decoded: a query for one
/// parameter reads three of the ten columns.
pub(crate) fn read_raw(path: &Path, device: &str, columns: Columns) -> io::Result<Vec<Row>> {
    let mut out = Vec::new();
    scan(path, Some(device), |rg, n, ids| {
        let t = read_i64(rg, 1, n)?;
        let wanted = |p: usize| match columns {
            Columns::All => true,
            Columns::One(q) => q == p,
            Columns::Time => false,
        };
        let mut ints: Vec<Vec<i32>> = Vec::with_capacity(6);
        for p in 0..6 {
            ints.push(if wanted(p) {
                read_i32(rg, 2 + p, n)?
            } else {
                Vec::new()
            });
        }
        let all = columns == Columns::All;
        let switch = if all {
            read_bool(rg, 8, n)?
        } else {
            Vec::new()
        };
        let statuses = if all { read_i32(rg, 9, n)? } else { Vec::new() };
        let at = |p: usize, k: usize| ints[p].get(k).copied().unwrap_or(0);
        for k in 0..n {
            if ids[k].data() == device.as_bytes() {
                out.push(Row {
                    t: t[k],
                    sensors: [at(0, k), at(1, k), at(2, k), at(3, k)],
                    battery: at(4, k),
                    signal: at(5, k),
                    statuses: statuses.get(k).map_or(0, |&s| s as u8),
                    switch_on: switch.get(k).copied().unwrap_or(false),
                });
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// The buckets in the rollup segment at `path`, of `device` or of all devices.
pub(crate) fn read_rollups(path: &Path, device: Option<&str>) -> io::Result<Vec<(String, Bucket)>> {
    let mut out = Vec::new();
    scan(path, device, |rg, n, ids| {
        let t = read_i64(rg, 1, n)?;
        let count = read_i32(rg, 2, n)?;
        let mut min = Vec::with_capacity(PARAMS);
        let mut max = Vec::with_capacity(PARAMS);
        let mut sum = Vec::with_capacity(PARAMS);
        for p in 0..PARAMS {
            min.push(read_i32(rg, 3 + 3 * p, n)?);
            max.push(read_i32(rg, 4 + 3 * p, n)?);
            sum.push(read_i64(rg, 5 + 3 * p, n)?);
        }
        for k in 0..n {
            if device.is_some_and(|d| ids[k].data() != d.as_bytes()) {
                continue;
            }
            let id = String::from_utf8_lossy(ids[k].data()).into_owned();
            out.push((
                id,
                Bucket {
                    t: t[k],
                    count: count[k].max(0) as u32,
                    min: std::array::from_fn(|p| min[p][k]),
                    max: std::array::from_fn(|p| max[p][k]),
                    sum: std::array::from_fn(|p| sum[p][k]),
                },
            ));
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: i64, temperature: i32) -> Row {
        Row {
            t,
            sensors: [temperature, 4_500, 101_325, 250],
            battery: 90,
            signal: -70,
            statuses: 0b01,
            switch_on: t % 2 == 0,
        }
    }

    #[test]
    fn raw_segments_round_trip_and_one_device_is_read_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("raw.parquet");
        // Enough devices for several row groups.
        let names: Vec<String> = (0..400).map(|d| format!("device_{d:04}")).collect();
        let devices: Vec<(&str, Vec<Row>)> = names
            .iter()
            .map(|n| {
                (
                    n.as_str(),
                    (0..60).map(|k| row(k * 5_000, 2_000 + k as i32)).collect(),
                )
            })
            .collect();
        write_raw(&path, &devices).expect("write");
        let got = read_raw(&path, "device_0137", Columns::All).expect("read");
        assert_eq!(got, devices[137].1);
        assert!(
            read_raw(&path, "device_9999", Columns::All)
                .expect("read")
                .is_empty()
        );
        // One parameter: its column and the time, the rest left at zero.
        let one = read_raw(&path, "device_0137", Columns::One(0)).expect("read");
        assert_eq!(one.len(), 60);
        assert_eq!(
            (one[3].t, one[3].sensors[0], one[3].sensors[1]),
            (15_000, 2_003, 0)
        );
        let times = read_raw(&path, "device_0137", Columns::Time).expect("read");
        assert!(times.iter().all(|r| r.sensors == [0; 4] && r.battery == 0));
        let bytes = std::fs::metadata(&path).expect("meta").len();
        assert!(bytes < 400 * 60 * 16, "{bytes} bytes for 24,000 rows");
    }

    #[test]
    fn rollup_segments_round_trip() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("1m.parquet");
        let b = super::super::rollup::roll(&[row(0, 10), row(30_000, 20), row(60_000, 5)], 60_000);
        write_rollups(&path, &[("a", b.clone()), ("b", b[..1].to_vec())]).expect("write");
        let all = read_rollups(&path, None).expect("read");
        assert_eq!(all.len(), 3);
        let a: Vec<Bucket> = read_rollups(&path, Some("a"))
            .expect("read")
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(a, b);
    }
}
